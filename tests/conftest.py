pytest_plugins = ["persona_sdk.testing"]

"""The third-party plugin template's own tests run as part of ours, so it never rots."""

import importlib.util
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "plugins" / "template"
if str(TEMPLATE) not in sys.path:
    sys.path.insert(0, str(TEMPLATE))  # makes persona_plugin_example importable, as installed

_spec = importlib.util.spec_from_file_location(
    "persona_plugin_template_tests", TEMPLATE / "tests" / "test_plugin.py"
)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if k.startswith("test_")})

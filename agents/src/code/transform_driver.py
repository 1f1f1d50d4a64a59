# Runs a mapping's custom transform in the sandbox: each line on stdin is a JSON array of
# values (strings or null); each answer on stdout is a JSON array with, per value, "=" and the
# result, "!" and the error it raised, or null for a NULL result. The user's prints go to stderr.
import importlib.util
import json
import sys

answers = sys.stdout
sys.stdout = sys.stderr
spec = importlib.util.spec_from_file_location("transform", "/work/transform.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
transform = getattr(module, "transform", None)
if not callable(transform):
    sys.exit("transform.py defines no function transform(value)")

for line in sys.stdin:
    out = []
    for value in json.loads(line):
        try:
            result = transform(value)
            out.append(None if result is None else "=" + str(result))
        except Exception as e:  # noqa: BLE001 - every error is the row's rejection reason
            out.append("!" + (type(e).__name__ + ": " + str(e)).replace("\n", " ")[:500])
    answers.write(json.dumps(out) + "\n")
    answers.flush()

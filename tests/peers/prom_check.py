"""Fetches a Prometheus text exposition and parses it with the reference
python client's parser (prometheus_client), which raises on anything that
is not valid exposition format. Prints the families as JSON for the Rust
test to check: {name: {"type", "help", "samples": [[name, labels, value]]}}.

usage: prom_check.py URL
"""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    out = {"content_type": ctype, "families": {}}
    for fam in text_string_to_metric_families(text):
        if fam.name in out["families"]:
            raise SystemExit(f"family {fam.name} appears twice")
        out["families"][fam.name] = {
            "type": fam.type,
            "help": fam.documentation,
            "samples": [[s.name, s.labels, s.value] for s in fam.samples],
        }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

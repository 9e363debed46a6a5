"""A harmless stand-in for `sudo`: records the command it was asked to run instead of running it.

Appends `{"argv": [...]}` to $HARK_TEST_PRIVILEGED_LOG, prints what would have run, sleeps
$HARK_TEST_PRIVILEGED_SLEEP seconds and exits with $HARK_TEST_PRIVILEGED_EXIT (default 0).
"""

import json
import os
import sys
import time

argv = sys.argv[1:]
with open(os.environ["HARK_TEST_PRIVILEGED_LOG"], "a") as log:
    log.write(json.dumps({"argv": argv}) + "\n")
print("would run: " + " ".join(argv), flush=True)
time.sleep(float(os.environ.get("HARK_TEST_PRIVILEGED_SLEEP", "0")))
sys.exit(int(os.environ.get("HARK_TEST_PRIVILEGED_EXIT", "0")))

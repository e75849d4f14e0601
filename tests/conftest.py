"""Settings for every test run."""

import os

# Tests use only the loopback network: google-auth must never look for a GCE metadata server (it
# does when a test leaves no project or credentials about, e.g. the CLI's "no project" path). Set
# before any test module imports google.auth, which reads it once.
os.environ["NO_GCE_CHECK"] = "true"

"""Static checks of the terraform in infra/ against the code in functions/.

terraform init/validate cannot run where the tests run (no provider downloads), so these parse the
HCL with python-hcl2 and check what would otherwise only show up in a real deployment: an entry
point that is not deployed, an environment variable the code reads that nobody sets, a topic name
that differs from the code's default, a push subscription without ordering/OIDC/dead-lettering,
a primitive role, an undocumented variable.

Every check is a `*_problems(infra_dir, functions_dir)` function returning a list of problems, so
the mutation tests at the bottom can show each one fails on a broken copy of the tree.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
FUNCTIONS = ROOT / "functions"

# Read by the Google client libraries when set, only ever locally (tests, scripts/demo): deployed
# functions talk to the real services, so infra must NOT set them.
LOCAL_ONLY_ENV = {
    "PUBSUB_EMULATOR_HOST": "local Pub/Sub emulator only; the deployed functions use the real Pub/Sub",
    "FIRESTORE_EMULATOR_HOST": "local Firestore emulator only; the deployed functions use the real Firestore",
}

# Set by the platform itself in every deployed function (Cloud Run): infra does not set them.
PLATFORM_ENV = {"K_SERVICE": "Cloud Run's service name; config.py refuses PUSH_AUTH=off when it is set"}

# Used when functions/main.py does not exist yet (the entry points the design names).
DEFAULT_ENTRY_POINTS = {"poll_clever": "http", "apply_roster_event": "cloud_event"}

# Names the design fixes (other code, scripts and the README use them).
EXPECTED_NAME_DEFAULTS = {
    "roster_events_topic": "roster-events",
    "dead_letter_topic": "roster-events-dead-letter",
    "dead_letter_subscription": "roster-events-dead-letter-sub",
    "apply_subscription": "roster-events-apply",
    "classroom_notifications_topic": "classroom-roster-notifications",
}

FORBIDDEN_ROLES = {"roles/owner", "roles/editor"}

FUNCTION_TYPE = "google_cloudfunctions2_function"

_HCL_OPTIONS = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)


# -- reading the terraform --------------------------------------------------------------------------


def load_tf(infra_dir: Path) -> dict:
    """All *.tf of a directory merged: resource[type][name], data[type][name], variable[name], locals."""
    merged: dict = {"resource": {}, "data": {}, "variable": {}, "locals": {}, "output": {}}
    files = sorted(infra_dir.glob("*.tf"))
    assert files, f"no terraform files in {infra_dir}"
    for path in files:
        doc = _parse_hcl(path.read_text(encoding="utf-8"))  # a broken copy re-parses only what changed
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        merged[kind].setdefault(rtype, {})[name] = body
        for kind in ("variable", "output"):
            for entry in doc.get(kind, []):
                merged[kind].update(entry)
        for entry in doc.get("locals", []):
            merged["locals"].update(entry)
    return merged


def unwrap(value):
    """'${expr}' -> 'expr' (python-hcl2 v8 wraps expressions); anything else unchanged."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}") and value.count("${") == 1:
        return value[2:-1].strip()
    return value


def block(body: dict, name: str) -> dict | None:
    """The first (only) nested block `name` of a body: v8 gives blocks as lists of dicts."""
    value = body.get(name)
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    if isinstance(value, dict):
        return value
    return None


def resolve(tf: dict, value, each: tuple[str, dict] | None = None):
    """An attribute's value with `local.x`, `each.key` and `each.value.x` references followed (the
    forms our terraform uses); anything else is returned as it is."""
    expr = unwrap(value)
    if not isinstance(expr, str):
        return value
    if each is not None and expr == "each.key":
        return each[0]
    m = re.fullmatch(r"each\.value\.(\w+)", expr)
    if each is not None and m:
        return resolve(tf, each[1].get(m.group(1)), each)
    m = re.fullmatch(r"local\.(\w+)", expr)
    if m and m.group(1) in tf["locals"]:
        return resolve(tf, tf["locals"][m.group(1)], each)
    return value


def resolve_map(tf: dict, value, each: tuple[str, dict] | None = None) -> dict:
    """A map attribute given inline, as `local.name` or as `each.value.name`."""
    resolved = resolve(tf, value, each)
    if isinstance(resolved, dict):
        return resolved
    raise AssertionError(f"cannot resolve the map {value!r}: give it inline, as local.<name> or each.value.<name>")


@dataclass
class DeployedFunction:
    """One deployed entry point: `address` as terraform names it, and what it is given."""

    address: str
    runtime: object
    env: dict
    secret_keys: set
    ingress: object


def _secret_keys(tf: dict, service: dict, each: tuple[str, dict] | None) -> set:
    keys = {unwrap(sev.get("key")) for sev in service.get("secret_environment_variables") or []}
    for dynamic in service.get("dynamic") or []:
        spec = dynamic.get("secret_environment_variables")
        if isinstance(spec, dict):  # dynamic "secret_environment_variables" { for_each = <map> ... }
            keys |= set(resolve_map(tf, spec.get("for_each"), each))
    return keys


def _for_each_map(tf: dict, value) -> dict:
    """A for_each map; a filtered one, `{ for k, v in local.x : k => v if ... }` (the functions of
    the district's roster source), stands for every entry of local.x: each is deployable."""
    resolved = resolve(tf, value)
    if isinstance(resolved, dict):
        return resolved
    m = re.search(r"\bin\s+local\.(\w+)\s*:", str(resolved))
    if m and isinstance(tf["locals"].get(m.group(1)), dict):
        return tf["locals"][m.group(1)]
    raise AssertionError(f"cannot resolve the for_each {value!r}")


def deployed_functions(tf: dict) -> dict[str, DeployedFunction]:
    """Entry point -> how it is deployed, from plain resources and from `for_each` ones."""
    out = {}
    for name, body in tf["resource"].get(FUNCTION_TYPE, {}).items():
        if "for_each" in body:
            instances = [(f'{name}["{key}"]', (key, spec)) for key, spec in _for_each_map(tf, body["for_each"]).items()]
        else:
            instances = [(name, None)]
        for address, each in instances:
            build = block(body, "build_config") or {}
            entry = resolve(tf, build.get("entry_point"), each)
            if not isinstance(entry, str):
                continue
            service = block(body, "service_config") or {}
            env = resolve_map(tf, service["environment_variables"], each) if "environment_variables" in service else {}
            runtime = resolve(tf, build.get("runtime"), each)
            ingress = resolve(tf, service.get("ingress_settings"), each)
            out[entry] = DeployedFunction(address, runtime, env, _secret_keys(tf, service, each), ingress)
    return out


# -- reading the code ---------------------------------------------------------------------------


def _decorator_kind(dec: ast.expr) -> str | None:
    """'http' / 'cloud_event' for @functions_framework.http / .cloud_event (also called: ...())."""
    target = dec.func if isinstance(dec, ast.Call) else dec
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "functions_framework"
        and target.attr in ("http", "cloud_event")
    ):
        return target.attr
    return None


def entry_points(functions_dir: Path) -> dict[str, str]:
    """Entry points of functions/main.py and their kind; the design's two until main.py exists."""
    main = functions_dir / "main.py"
    if not main.exists():
        return dict(DEFAULT_ENTRY_POINTS)
    tree = ast.parse(main.read_text(encoding="utf-8"), filename=str(main))
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                kind = _decorator_kind(dec)
                if kind:
                    found[node.name] = kind
    return found


_ENV_READ = re.compile(
    r"""os\.(?:environ\.get|getenv)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]"""
)


def _is_env_read(node: ast.AST) -> ast.expr | None:
    """The key expression of os.environ.get(k) / os.getenv(k) / os.environ[k], else None."""
    if isinstance(node, ast.Call) and node.args:
        f = node.func
        if isinstance(f, ast.Attribute):
            if f.attr == "get" and isinstance(f.value, ast.Attribute) and f.value.attr == "environ":
                return node.args[0]
            if f.attr == "getenv" and isinstance(f.value, ast.Name) and f.value.id == "os":
                return node.args[0]
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "environ":
        return node.slice
    return None


def env_vars_read(functions_dir: Path) -> dict[str, str]:
    """Every environment variable the code reads -> where. Direct reads by regex, and reads through
    a helper such as config.py's `_int(name, ...)` (a function passing its parameter to
    os.environ.get) by following the helper's calls with a string literal."""
    found: dict[str, str] = {}
    for path in sorted(functions_dir.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(functions_dir).as_posix()
        for m in _ENV_READ.finditer(text):
            found.setdefault(m.group(1) or m.group(2), rel)
        tree = ast.parse(text, filename=str(path))
        helpers: dict[str, int] = {}  # function name -> index of the parameter used as the key
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                params = [a.arg for a in fn.args.args]
                for node in ast.walk(fn):
                    key = _is_env_read(node)
                    if isinstance(key, ast.Name) and key.id in params:
                        helpers[fn.name] = params.index(key.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
                i = helpers[node.func.id]
                if (
                    len(node.args) > i
                    and isinstance(node.args[i], ast.Constant)
                    and isinstance(node.args[i].value, str)
                ):
                    found.setdefault(node.args[i].value, rel)
    return found


def code_defaults(functions_dir: Path) -> dict[str, str]:
    """Module-level DEFAULT_*_TOPIC / DEFAULT_*_SUBSCRIPTION string constants of the code."""
    out = {}
    for path in sorted(functions_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                for target in node.targets:
                    if (
                        isinstance(target, ast.Name)
                        and re.fullmatch(r"DEFAULT_\w+_(TOPIC|SUBSCRIPTION)", target.id)
                        and isinstance(node.value.value, str)
                    ):
                        out[target.id] = node.value.value
    return out


# -- the checks -----------------------------------------------------------------------------------


def entry_point_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    tf = load_tf(infra_dir)
    deployed = deployed_functions(tf)
    wanted = entry_points(functions_dir)
    problems = []
    if not wanted:
        problems.append("found no entry points in functions/main.py")
    for name in sorted(wanted):
        if name not in deployed:
            problems.append(f"entry point {name} is not deployed as a {FUNCTION_TYPE} with entry_point = {name!r}")
            continue
        if deployed[name].runtime != "python311":
            problems.append(f"{name}: runtime is {deployed[name].runtime!r}, not python311")
    for name in sorted(set(deployed) - set(wanted)):
        problems.append(f"{FUNCTION_TYPE}.{deployed[name].address} deploys {name!r}, which main.py does not define")
    return problems


def env_var_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    tf = load_tf(infra_dir)
    plain: set[str] = set()
    secret: set[str] = set()
    for fn in deployed_functions(tf).values():
        plain |= set(fn.env)
        secret |= fn.secret_keys
    read = env_vars_read(functions_dir)
    problems = []
    if not read:
        problems.append("found no environment variable reads in functions/: is the scanner broken?")
    for var, where in sorted(read.items()):
        if var in PLATFORM_ENV:
            continue
        if var in LOCAL_ONLY_ENV:
            if var in plain | secret:
                problems.append(f"{var} is set in infra but is local-only: {LOCAL_ONLY_ENV[var]}")
        elif var not in plain | secret:
            problems.append(
                f"{var} (read in functions/{where}) is set in no function's environment_variables "
                "or secret_environment_variables"
            )
    if "CLEVER_TOKEN" in plain:
        problems.append("CLEVER_TOKEN is a plain environment variable: it must come from Secret Manager")
    return problems


def name_default_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    tf = load_tf(infra_dir)
    variables = tf["variable"]
    problems = []
    defaults = code_defaults(functions_dir)
    if "DEFAULT_ROSTER_EVENTS_TOPIC" not in defaults:
        problems.append("DEFAULT_ROSTER_EVENTS_TOPIC not found in functions/ (config.py)")
    for const, value in sorted(defaults.items()):
        var = const.removeprefix("DEFAULT_").lower()
        got = variables.get(var, {}).get("default")
        if got != value:
            problems.append(f"variable {var} defaults to {got!r}, the code's {const} is {value!r}")
    for var, value in sorted(EXPECTED_NAME_DEFAULTS.items()):
        got = variables.get(var, {}).get("default")
        if got != value:
            problems.append(f"variable {var} defaults to {got!r}, expected {value!r}")
    # The functions must be told the topic that terraform actually creates.
    topics = {name: unwrap(body.get("name")) for name, body in tf["resource"].get("google_pubsub_topic", {}).items()}
    for fn in deployed_functions(tf).values():
        env, fname = fn.env, fn.address
        if "ROSTER_EVENTS_TOPIC" in env:
            m = re.fullmatch(r"google_pubsub_topic\.(\w+)\.name", str(unwrap(env["ROSTER_EVENTS_TOPIC"])))
            if not m or topics.get(m.group(1)) != "var.roster_events_topic":
                problems.append(
                    f"{fname}: ROSTER_EVENTS_TOPIC is {env['ROSTER_EVENTS_TOPIC']!r}, not the name of the "
                    "topic created from var.roster_events_topic"
                )
    return problems


def push_subscription_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    tf = load_tf(infra_dir)
    subs = tf["resource"].get("google_pubsub_subscription", {})
    deployed = deployed_functions(tf)
    problems = []
    fed: set[str] = set()  # entry points
    dead_letter_topics = {
        unwrap((block(b, "dead_letter_policy") or {}).get("dead_letter_topic")) for b in subs.values()
    } - {None}
    for name, body in subs.items():
        push = block(body, "push_config")
        if push is None:
            continue
        where = f"google_pubsub_subscription.{name}"
        endpoint = str(unwrap(push.get("push_endpoint")))
        fed |= {entry for entry, fn in deployed.items() if endpoint.startswith(f"{FUNCTION_TYPE}.{fn.address}.")}
        # The functions' deterministic URLs, local.push_urls.<entry point> (functions.tf).
        m = re.fullmatch(r"local\.push_urls\.(\w+)", endpoint)
        if m and m.group(1) in deployed:
            fed.add(m.group(1))
        elif m:
            problems.append(f"{where}: {endpoint} names no deployed entry point")
        if body.get("enable_message_ordering") is not True:
            problems.append(f"{where}: enable_message_ordering is not true")
        oidc = block(push, "oidc_token")
        if not oidc or not oidc.get("service_account_email") or not oidc.get("audience"):
            problems.append(f"{where}: push_config has no oidc_token with service_account_email and audience")
        elif unwrap(oidc["audience"]) != unwrap(push.get("push_endpoint")):
            problems.append(f"{where}: the OIDC audience is not the push endpoint (the function URL)")
        dead = block(body, "dead_letter_policy")
        # The dead letters' own subscription keeps what it cannot deliver (no dead letter of dead letters).
        if unwrap(body.get("topic")) in dead_letter_topics:
            if dead:
                problems.append(f"{where}: a dead-letter topic's subscription dead-letters again")
        elif not dead or not dead.get("dead_letter_topic") or not dead.get("max_delivery_attempts"):
            problems.append(f"{where}: no dead_letter_policy with dead_letter_topic and max_delivery_attempts")
        retry = block(body, "retry_policy")
        if not retry or not retry.get("minimum_backoff") or not retry.get("maximum_backoff"):
            problems.append(f"{where}: no retry_policy with minimum_backoff and maximum_backoff")
    for entry, kind in sorted(entry_points(functions_dir).items()):
        if kind == "cloud_event" and entry in deployed and entry not in fed:
            problems.append(f"cloud_event entry point {entry} is fed by no push subscription")
    if not any(block(b, "push_config") for b in subs.values()):
        problems.append("no push subscription at all")
    return problems


def ingress_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    """No function open to the internet by default (checkov's CKV_GCP_124, which cannot follow for_each)."""
    tf = load_tf(infra_dir)
    problems = []
    for entry, fn in sorted(deployed_functions(tf).items()):
        ingress = fn.ingress
        m = re.fullmatch(r"var\.(\w+)", str(unwrap(ingress)))
        if m:
            ingress = tf["variable"].get(m.group(1), {}).get("default")
        if ingress not in ("ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"):
            problems.append(f"{entry}: ingress_settings is {fn.ingress!r} (default {ingress!r}), open to the internet")
    return problems


def primitive_role_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    """No roles/owner or roles/editor in any IAM resource, also not inside a for_each list."""
    tf = load_tf(infra_dir)
    problems = []
    iam_bodies = []
    for kind in ("resource", "data"):
        for rtype, named in tf[kind].items():
            if "iam" in rtype:
                iam_bodies += [(f"{rtype}.{name}", body) for name, body in named.items()]
    for where, body in iam_bodies:
        for role in set(re.findall(r"roles/[A-Za-z0-9_.]+", json.dumps(body))):
            if role in FORBIDDEN_ROLES:
                problems.append(f"{where} grants {role}")
    if not iam_bodies:
        problems.append("found no IAM resources at all")
    return problems


def variable_description_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    tf = load_tf(infra_dir)
    return [
        f"variable {name} has no description"
        for name, body in sorted(tf["variable"].items())
        if not str(body.get("description") or "").strip()
    ]


def checkov_skip_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    """Every inline checkov skip names a check and says why (a real sentence, not 'n/a')."""
    problems = []
    for path in sorted(infra_dir.glob("*.tf")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "checkov:skip" in line:
                m = re.search(r"checkov:skip=(CKV2?_[A-Z0-9]+_\d+):(.*)", line)
                if not m or len(m.group(2).strip()) < 30:
                    problems.append(f"{path.name}:{n}: checkov skip without a real justification: {line.strip()}")
    return problems


CHECKS = [
    entry_point_problems,
    env_var_problems,
    name_default_problems,
    push_subscription_problems,
    ingress_problems,
    primitive_role_problems,
    variable_description_problems,
    checkov_skip_problems,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_infra_matches_the_code(check):
    assert check(INFRA, FUNCTIONS) == []


def test_scanner_finds_the_settings_config_reads():
    """The env var scanner sees reads through config.py's helpers too (else the check is vacuous)."""
    read = env_vars_read(FUNCTIONS)
    config = (FUNCTIONS / "rostersync" / "config.py").read_text(encoding="utf-8")
    literal_names = set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', config))
    assert literal_names, "config.py names no environment variables: update this test"
    assert literal_names <= set(read)
    assert {"GOOGLE_CLOUD_PROJECT", "CLEVER_TOKEN", "CLEVER_PAGE_SIZE", "SECTION_DELETED_ACTION"} <= set(read)


# -- each check can fail: run it on a broken copy of the tree -----------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    infra = tmp_path / "infra"
    functions = tmp_path / "functions"
    infra.mkdir()
    for path in INFRA.glob("*.tf"):
        shutil.copy(path, infra / path.name)
    shutil.copytree(FUNCTIONS, functions, ignore=shutil.ignore_patterns("__pycache__"))
    return infra, functions


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replaces `old` (its runs of spaces match any run, so terraform fmt's alignment does not
    matter) with `new`, `count` times (0: everywhere)."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(r"\s+".join(re.escape(part) for part in old.split()))
    assert pattern.search(text), f"mutation target not found in {path.name}: {old!r}"
    path.write_text(pattern.sub(lambda m: new, text, count=count), encoding="utf-8")


def _edit_all(infra: Path, old: str, new: str) -> None:
    """The same mutation in every .tf file that has it."""
    hits = [p for p in infra.glob("*.tf") if re.search(r"\s+".join(map(re.escape, old.split())), p.read_text())]
    assert hits, f"mutation target not found: {old!r}"
    for path in hits:
        _edit(path, old, new, count=0)


NEW_ENTRY_POINT = """

@functions_framework.cloud_event
def handle_dead_letter(cloud_event):
    return None
"""

MUTATIONS = {
    "entry point renamed in infra": (
        entry_point_problems,
        lambda i, f: _edit(i / "functions.tf", "apply_roster_event = {", "apply = {"),
    ),
    "new entry point in main.py": (
        entry_point_problems,
        lambda i, f: (f / "main.py").write_text((f / "main.py").read_text() + NEW_ENTRY_POINT),
    ),
    "Clever token secret removed": (
        env_var_problems,
        lambda i, f: _edit_all(i, "CLEVER_TOKEN = {", "CLEVER_TOKN = {"),
    ),
    "env var dropped from the functions": (
        env_var_problems,
        lambda i, f: _edit(i / "functions.tf", "LOG_LEVEL                 = var.log_level", ""),
    ),
    "code reads a new env var": (
        env_var_problems,
        lambda i, f: (f / "rostersync" / "extra.py").write_text('import os\nX = os.getenv("NEW_SETTING")\n'),
    ),
    "code reads a new env var through a helper": (
        env_var_problems,
        lambda i, f: _edit(
            f / "rostersync" / "config.py",
            "        log_level=",
            '        clever_retries=_int("CLEVER_RETRIES", 3, 0, 9),\n        log_level=',
        ),
    ),
    "topic default differs from the code": (
        name_default_problems,
        lambda i, f: _edit(i / "variables.tf", 'default     = "roster-events"\n', 'default     = "roster-changes"\n'),
    ),
    "code default topic changed": (
        name_default_problems,
        lambda i, f: _edit(
            f / "rostersync" / "config.py",
            'DEFAULT_ROSTER_EVENTS_TOPIC = "roster-events"',
            'DEFAULT_ROSTER_EVENTS_TOPIC = "roster-updates"',
        ),
    ),
    "no message ordering": (
        push_subscription_problems,
        lambda i, f: _edit(i / "pubsub.tf", "enable_message_ordering = true", "enable_message_ordering = false"),
    ),
    "no dead-letter policy": (
        push_subscription_problems,
        lambda i, f: _edit(i / "pubsub.tf", "dead_letter_policy {", "dynamic_unused {"),
    ),
    "no retry policy": (
        push_subscription_problems,
        lambda i, f: _edit(i / "pubsub.tf", "retry_policy {", "retry_unused {"),
    ),
    "no OIDC token": (
        push_subscription_problems,
        lambda i, f: _edit(i / "pubsub.tf", "oidc_token {", "no_token {"),
    ),
    "status page open to the internet": (
        ingress_problems,
        lambda i, f: _edit(
            i / "functions.tf", 'ingress             = "ALLOW_INTERNAL_AND_GCLB"', 'ingress = "ALLOW_ALL"'
        ),
    ),
    "functions open to the internet by default": (
        ingress_problems,
        lambda i, f: _edit(i / "variables.tf", 'default     = "ALLOW_INTERNAL_ONLY"', 'default     = "ALLOW_ALL"'),
    ),
    "a Clever-reading function loses its token": (
        env_var_problems,
        lambda i, f: _edit_all(i, "secrets             = local.clever_token_secret", "secrets = {}"),
    ),
    "editor granted through for_each": (
        primitive_role_problems,
        lambda i, f: _edit(i / "iam.tf", '"roles/logging.logWriter", # build logs', '"roles/editor",'),
    ),
    "owner granted directly": (
        primitive_role_problems,
        lambda i, f: _edit(i / "iam.tf", 'role    = "roles/pubsub.publisher"', 'role    = "roles/owner"'),
    ),
    "variable without description": (
        variable_description_problems,
        lambda i, f: _edit(i / "variables.tf", 'description = "LOG_LEVEL of the functions', 'type_note = "LOG_LEVEL'),
    ),
    "checkov skip without reason": (
        checkov_skip_problems,
        lambda i, f: _edit(
            i / "storage.tf", "#checkov:skip=CKV_GCP_62:Access logs", "#checkov:skip=CKV_GCP_62\n  # Access logs"
        ),
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_check_fails_on_a_broken_tree(tree, mutation):
    infra, functions = tree
    check, mutate = MUTATIONS[mutation]
    assert check(infra, functions) == [], "the unbroken copy must pass"
    mutate(infra, functions)
    assert check(infra, functions) != [], f"{check.__name__} did not notice: {mutation}"


def test_entry_points_fall_back_to_the_design_without_main_py(tmp_path):
    assert entry_points(tmp_path) == DEFAULT_ENTRY_POINTS


def test_the_guardian_scope_is_listed_only_with_guardians_on_and_is_the_one_the_code_asks_for():
    from rostersync.adapters.classroom import GUARDIAN_SCOPE, SCOPES, scopes_for
    from rostersync.config import Settings

    tf = load_tf(INFRA)
    local = str(tf["locals"]["guardian_scopes"])
    assert GUARDIAN_SCOPE in local and 'var.guardians == "invite"' in local
    assert tf["variable"]["guardians"]["default"] == Settings.__dataclass_fields__["guardians"].default == "off"
    output = str(tf["output"]["domain_wide_delegation_scopes"]["value"])
    assert "local.guardian_scopes" in output and all(s in output for s in SCOPES)

    class On:
        guardians_on = True

    class Off:
        guardians_on = False

    assert scopes_for(On()) == SCOPES + [GUARDIAN_SCOPE] and scopes_for(Off()) == SCOPES


# -- privacy and least privilege (issue 14) ---------------------------------------------------------

# The functions whose code builds a Classroom client with domain-wide delegation (wiring._classroom).
CLASSROOM_CALLERS = {"apply_roster_event", "reconcile_courses", "record_classroom_notification"}
# Every collection whose documents the code dates with expire_at, and where (retention.py).
TTL_COLLECTIONS = {
    "audit": "adapters/store.py",
    "problems": "adapters/store.py",
    "held_batches": "adapters/store.py",
    "changes": "adapters/store.py",
    "parts": "adapters/store.py",
    "dead_letters": "adapters/deadletter_store.py",
    "data": "adapters/deadletter_store.py",
    "oneroster_classes": "adapters/oneroster_store.py",
}


def _grants(tf: dict) -> list[tuple[str, str, dict]]:
    """(address, role, body) of every IAM member grant in the tree."""
    out = []
    for rtype, named in tf["resource"].items():
        if rtype.endswith("_iam_member"):
            for name, body in named.items():
                out.append((f"{rtype}.{name}", str(unwrap(body.get("role"))), body))
    return out


def test_each_function_runs_as_its_own_service_account():
    tf = load_tf(INFRA)
    functions = tf["locals"]["functions"]
    accounts = {entry: unwrap(spec["service_account"]) for entry, spec in functions.items()}
    assert len(set(accounts.values())) == len(accounts), accounts
    own = tf["locals"]["function_accounts"]
    for entry, account in accounts.items():
        if entry == "status_page":
            assert account == "google_service_account.status_page.email"
        else:
            assert account == f'google_service_account.function["{entry}"].email', entry
            assert entry in own
    assert set(own) | {"status_page"} == set(entry_points(FUNCTIONS))
    ids = [a["id"] for a in own.values()]
    assert len(set(ids)) == len(ids) and all(len(f"rostersync-{i}") <= 30 for i in ids)
    assert "functions" not in tf["resource"]["google_service_account"]  # the old shared account is gone


def test_no_function_account_holds_token_creator_and_only_classroom_callers_sign_jwts():
    tf = load_tf(INFRA)
    for address, role, body in _grants(tf):
        member = str(body.get("member"))
        if "tokenCreator" in role or "serviceAccountTokenCreator" in role:
            assert "function" not in member and "status_page" not in member, address
            assert member == "${local.pubsub_service_agent}", address  # only Pub/Sub minting push tokens
    role = tf["resource"]["google_project_iam_custom_role"]["sign_jwt"]
    assert role["permissions"] == ["iam.serviceAccounts.signJwt"]
    sign = tf["resource"]["google_service_account_iam_member"]["classroom_sign_jwt"]
    assert unwrap(sign["role"]) == "google_project_iam_custom_role.sign_jwt.name"
    assert unwrap(sign["service_account_id"]) == "google_service_account.classroom.name"
    callers = {e for e, a in tf["locals"]["function_accounts"].items() if a["classroom"]}
    assert callers == CLASSROOM_CALLERS
    publishers = {e for e, a in tf["locals"]["function_accounts"].items() if a["publish"]}
    assert publishers == {"poll_clever", "poll_oneroster", "import_oneroster_bundle"}
    env = tf["locals"]["function_env"]
    assert unwrap(env["CLASSROOM_DELEGATE_ACCOUNT"]) == "google_service_account.classroom.email"
    # The Clever token is read by the two functions that read Clever, nobody else.
    clever = tf["resource"]["google_secret_manager_secret_iam_member"]["functions_read_clever_token"]
    assert set(re.findall(r'"(\w+)"', clever["for_each"])) == {"poll_clever", "reconcile_courses"}


def test_firestore_grants_are_limited_to_the_database_by_a_condition():
    tf = load_tf(INFRA)
    expected = 'resource.name == "projects/${var.project_id}/databases/${var.firestore_database}"'
    assert tf["locals"]["firestore_database_condition"] == expected
    firestore_grants = [(a, b) for a, role, b in _grants(tf) if role.startswith("roles/datastore.")]
    assert {a for a, _ in firestore_grants} == {
        "google_project_iam_member.function_firestore",
        "google_project_iam_member.status_page",
    }
    for address, body in firestore_grants:
        condition = block(body, "condition")
        assert condition, f"{address} has no IAM condition"
        assert unwrap(condition["expression"]) == "local.firestore_database_condition", address
    # The status page only reads.
    assert tf["resource"]["google_project_iam_member"]["status_page"]["role"] == "roles/datastore.viewer"


def test_firestore_data_access_audit_logs_are_enabled():
    tf = load_tf(INFRA)
    configs = tf["resource"]["google_project_iam_audit_config"]
    firestore = [c for c in configs.values() if c["service"] == "datastore.googleapis.com"]
    assert len(firestore) == 1
    types = {c["log_type"] for c in firestore[0]["audit_log_config"]}
    assert {"DATA_READ", "DATA_WRITE"} <= types
    assert all(not c.get("exempted_members") for c in firestore[0]["audit_log_config"])


def test_every_dated_collection_has_a_ttl_policy_on_expire_at():
    tf = load_tf(INFRA)
    fields = tf["resource"]["google_firestore_field"]
    policies = {}
    for name, body in fields.items():
        if block(body, "ttl_config") is None:
            continue  # an index exemption (sections.members), not a retention policy
        collections = [body["collection"]] if "for_each" not in body else list(_for_each_map(tf, body["for_each"]))
        for collection in collections:
            assert body["field"] == "expire_at", name
            policies[collection] = name
    assert set(policies) == set(TTL_COLLECTIONS)
    for collection, module in TTL_COLLECTIONS.items():
        source = (FUNCTIONS / "rostersync" / module).read_text()
        assert '"expire_at"' in source, f"{module} never dates {collection}"


def test_the_status_page_checks_iap_for_its_backend_service():
    tf = load_tf(INFRA)
    env = tf["locals"]["functions"]["status_page"]["env"]
    assert unwrap(env["IAP_AUDIENCE"]) == "local.status_page_iap_audience"
    audience = tf["locals"]["status_page_iap_audience"]
    assert "/global/backendServices/${google_compute_backend_service.status_page[0].generated_id}" in audience
    assert env["IAP_KEYS_URL"] == "https://www.gstatic.com/iap/verify/public_key-jwk"


# -- monitoring (infra/monitoring.tf): alerts, log-based metrics, the dashboard ---------------------

# Each alert the operators asked for: the policy, the threshold variable it uses (None: any one is
# too many), and what its condition must watch (a log-based metric of ours, or a Google metric).
EXPECTED_ALERTS = {
    "poll_missing": ("alert_poll_missing_minutes", "poll_succeeded"),
    "applier_errors": ("alert_applier_errors", "apply_errors"),
    "backlog": ("alert_backlog_minutes", "pubsub.googleapis.com/subscription/oldest_unacked_message_age"),
    "dead_letters": (None, "dead_letters"),
    "held_batch": ("alert_held_batch_hours", "held_batch_overdue"),
    "renewal_failing": (None, "renewal_failed"),
    "classroom_quota": ("alert_classroom_quota_minutes", "serviceruntime.googleapis.com/api/request_count"),
}
# Each dashboard chart the operators asked for: a word of its title, and the metric it must read.
EXPECTED_CHARTS = {
    "changes applied": "apply_changes",
    "calls per change": "apply_calls",
    "latency from poll to apply": "apply_latency",
    "backlog": "pubsub.googleapis.com/subscription/num_undelivered_messages",
    "problems": "problems",
    "dead letters": "dead_letters",
}


def _code_literals(functions_dir: Path) -> set[str]:
    """Every string constant in the functions' code: the operations and outcomes the log-based
    metrics filter on must be among them (a misspelled one would count nothing, silently)."""
    values = set()
    for path in [functions_dir / "main.py", *(functions_dir / "rostersync").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                values.add(node.value)
    return values


@functools.lru_cache(maxsize=256)
def _parse_hcl(text: str) -> dict:
    return hcl2.loads(text, serialization_options=_HCL_OPTIONS)


def _load_monitoring(infra_dir: Path) -> dict:
    """monitoring.tf alone, merged as load_tf does (it holds everything the check reads; parsing the
    whole tree for each broken copy would cost seconds a test)."""
    path = infra_dir / "monitoring.tf"
    merged: dict = {"resource": {}, "data": {}, "variable": {}, "locals": {}, "output": {}}
    if not path.exists():
        return merged
    doc = _parse_hcl(path.read_text(encoding="utf-8"))
    for kind in ("resource", "data"):
        for entry in doc.get(kind, []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    merged[kind].setdefault(rtype, {})[name] = body
    for entry in doc.get("variable", []):
        merged["variable"].update(entry)
    for entry in doc.get("locals", []):
        merged["locals"].update(entry)
    return merged


def monitoring_problems(infra_dir: Path, functions_dir: Path) -> list[str]:
    tf = _load_monitoring(infra_dir)
    problems = []
    variables = tf["variable"]
    channels = variables.get("alert_notification_channels")
    if not channels or "list(string)" not in str(channels.get("type")):
        problems.append("no variable alert_notification_channels (list(string)) for the alerts' channels")
    if "var.alert_notification_channels" not in str(tf["locals"].get("alert_channels")):
        problems.append("local.alert_channels does not include var.alert_notification_channels")
    metrics = tf["resource"].get("google_logging_metric", {})
    policies = tf["resource"].get("google_monitoring_alert_policy", {})
    for name, (variable, watched) in EXPECTED_ALERTS.items():
        policy = policies.get(name)
        if policy is None:
            problems.append(f"no alert policy {name}")
            continue
        if unwrap(policy.get("notification_channels")) != "local.alert_channels":
            problems.append(f"alert policy {name} is not sent to local.alert_channels")
        text = json.dumps(policy)
        conditions = json.dumps(policy.get("conditions"))
        if variable is not None:
            body = variables.get(variable) or {}
            if "default" not in body or "Default" not in str(body.get("description")):
                problems.append(f"threshold variable {variable} needs a default and its justification")
            # the threshold may be applied in the alert or in the metric's filter
            where = conditions + json.dumps(metrics.get(watched, {}).get("filter"))
            if f"var.{variable}" not in where:
                problems.append(f"alert policy {name} does not use var.{variable}")
        if "." in watched:
            if f'metric.type=\\"{watched}\\"' not in text:
                problems.append(f"alert policy {name} does not watch {watched}")
        elif watched not in metrics:
            problems.append(f"alert policy {name}: no log-based metric {watched}")
        elif f"google_logging_metric.{watched}.name" not in text:
            problems.append(f"alert policy {name} does not watch the log-based metric {watched}")
    # The metrics count entries the code writes: every operation and outcome they filter on is logged.
    literals = _code_literals(functions_dir)
    for name, metric in metrics.items():
        text = str(metric.get("filter"))
        for field in ("operation", "outcome"):
            for group in re.findall(rf"jsonPayload\.{field}=(\([^)]*\)|\"\w+\")", text):
                for value in re.findall(r'"(\w+)"', group):
                    if value not in literals:
                        problems.append(f"log metric {name} filters on {field} {value!r}, which nothing logs")
    dashboards = tf["resource"].get("google_monitoring_dashboard", {})
    tiles = tf["locals"].get("dashboard_tiles") or []
    if not dashboards:
        problems.append("no google_monitoring_dashboard")
    for word, metric in EXPECTED_CHARTS.items():
        tile = next((t for t in tiles if word in str(t.get("title", "")).lower()), None)
        if tile is None:
            problems.append(f"the dashboard has no chart of {word}")
            continue
        query = json.dumps(tile.get("query"))
        reads = (metric in query) if "." in metric else (f"google_logging_metric.{metric}.name" in query)
        if not reads or ("." not in metric and metric not in metrics):
            problems.append(f"the dashboard's chart of {word} does not read {metric}")
    return problems


def test_monitoring_has_each_alert_metric_chart_and_the_channel_variable():
    assert monitoring_problems(INFRA, FUNCTIONS) == []


def test_the_operations_the_metrics_count_are_found_in_the_code():
    """The scanner behind the monitoring check sees what main.py logs (else it would pass vacuously)."""
    literals = _code_literals(FUNCTIONS)
    assert {"apply", "record_dead_letter", "held_batches", "renew_classroom_registration"} <= literals
    assert {"applied", "recorded", "ok", "partial"} <= literals
    assert "record_dead_lettr" not in literals and "written" not in literals  # the mutations below


MONITORING_MUTATIONS = {
    "an alert policy removed": lambda i: _edit(
        i / "monitoring.tf", 'resource "google_monitoring_alert_policy" "dead_letters"', 'resource "x" "y"'
    ),
    "an operation misspelled in a metric": lambda i: _edit(
        i / "monitoring.tf",
        'jsonPayload.operation=\\"record_dead_letter\\"',
        'jsonPayload.operation=\\"record_dead_lettr\\"',
    ),
    "an outcome no one logs": lambda i: _edit(
        i / "monitoring.tf", 'jsonPayload.outcome=\\"recorded\\"', 'jsonPayload.outcome=\\"written\\"'
    ),
    "alerts sent nowhere": lambda i: _edit(
        i / "monitoring.tf", "notification_channels = local.alert_channels", "notification_channels = []"
    ),
    "no channel variable": lambda i: _edit(
        i / "monitoring.tf", 'variable "alert_notification_channels"', 'variable "alert_channel_ids"'
    ),
    "threshold hard-coded": lambda i: _edit(
        i / "monitoring.tf", "threshold_value = var.alert_backlog_minutes * 60", "threshold_value = 3600"
    ),
    "a chart missing": lambda i: _edit(
        i / "monitoring.tf", 'title = "Classroom calls per change"', 'title = "Classroom calls"'
    ),
}


@pytest.mark.parametrize("mutation", sorted(MONITORING_MUTATIONS))
def test_the_monitoring_check_fails_on_a_broken_tree(tree, mutation):
    infra, functions = tree
    assert monitoring_problems(infra, functions) == [], "the unbroken copy must pass"
    MONITORING_MUTATIONS[mutation](infra)
    assert monitoring_problems(infra, functions) != [], f"monitoring_problems did not notice: {mutation}"


# -- the Google providers' schema (scripts/lib/tf_schema.py, run by scripts/check-infra) -----------


def _schema_checker():
    """scripts/lib/tf_schema.py and the schema scripts/check-infra builds (it runs before pytest in
    scripts/test; run it once by hand otherwise)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tf_schema", ROOT / "scripts" / "lib" / "tf_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    schemas = sorted((ROOT / ".venv-checkov").glob("google-provider-schema-*.json"))
    if not schemas:
        pytest.skip("no provider schema yet: run scripts/check-infra (scripts/test does) once")
    return module, schemas[-1]


def test_infra_matches_the_google_providers_schema():
    checker, schema = _schema_checker()
    assert checker.check(schema, INFRA) == []


SCHEMA_MUTATIONS = {
    "a misspelled argument": ("pubsub.tf", "ack_deadline_seconds", "ack_deadline_secs", "unknown argument"),
    "an unknown nested block": ("monitoring.tf", "exponential_buckets {", "exponential_bucket {", "unknown argument"),
    "a missing required argument": ("monitoring.tf", 'combiner              = "OR"', "", "missing required argument"),
    "an unknown resource type": (
        "pubsub.tf",
        '"google_pubsub_topic"',
        '"google_pubsub_topik"',
        "unknown resource type",
    ),
    "an unknown data source": ("locals.tf", 'data "google_project"', 'data "google_projekt"', "unknown data source"),
    "a beta-only resource under google": ("locals.tf", "provider = google-beta", "", "unknown resource type"),
    "a provider range moved": (
        "versions.tf",
        'version = "~> 6.40"',
        'version = "~> 7.0"',
        "does not allow",
    ),
}


@pytest.mark.parametrize("mutation", sorted(SCHEMA_MUTATIONS))
def test_the_schema_check_fails_on_a_broken_copy(tmp_path, mutation):
    checker, schema = _schema_checker()
    name, old, new, expected = SCHEMA_MUTATIONS[mutation]
    # Only the file broken (and versions.tf): each file is checked on its own, and parsing is slow.
    for copied in {name, "versions.tf"}:
        shutil.copy(INFRA / copied, tmp_path / copied)
    assert checker.check(schema, tmp_path) == [], "the unbroken copy must pass"
    _edit(tmp_path / name, old, new)
    problems = checker.check(schema, tmp_path)
    assert any(expected in p for p in problems), problems

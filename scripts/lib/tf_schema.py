"""Checks infra/*.tf against the Google providers' own schema, as `terraform validate` would for
what it can see without the providers: every google_* resource and data source type exists, every
argument and nested block is one the provider has, and every required one is there.

The schema comes from the prebuilt cdktf bindings of the google and google-beta providers (PyPI:
cdktf-cdktf-provider-google, -google-beta), whose jsii assembly describes each resource's
configuration: its arguments (camelCase there, snake_case in HCL), which are optional, and its
nested blocks (structs). scripts/check-infra downloads the wheels once and `build`s a compact
schema file from them; `check` reads that file and the terraform (python-hcl2, from .venv).

    python tf_schema.py build SCHEMA.json WHEEL...
    python tf_schema.py check SCHEMA.json INFRA_DIR

Not checked: references between resources (an attribute read from another resource, e.g.
`google_x.y.email`): the bindings describe what a configuration sets, not every computed
attribute, so a misspelled reference is left to `terraform validate`.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import zipfile
from pathlib import Path

# Arguments every resource and data source takes (Terraform's meta-arguments).
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
_SUMMARY = re.compile(r"docs/(resources|data-sources)/\S+ (google_\w+)\} (?:Resource|Data Source)")


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _jsii_assembly(wheel: Path) -> dict:
    with zipfile.ZipFile(wheel) as z:
        (inner,) = [n for n in z.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(z.read(inner)), mode="r:gz") as tar:
            member = tar.extractfile("package/.jsii")
            assert member is not None, f"{wheel.name}: no package/.jsii in {inner}"
            return json.load(member)


def _struct_of(type_ref: dict, types: dict) -> tuple[str | None, bool]:
    """(fqn of the struct a property holds, whether it is a list of them), or (None, False) for an
    attribute (a primitive, or a list or map of primitives)."""
    if "fqn" in type_ref and type_ref["fqn"] in types and types[type_ref["fqn"]].get("datatype"):
        return type_ref["fqn"], False
    for option in type_ref.get("union", {}).get("types", []):
        element = option.get("collection", {}).get("elementtype", {})
        if "fqn" in element and element["fqn"] in types and types[element["fqn"]].get("datatype"):
            return element["fqn"], True
        if "fqn" in option and option["fqn"] in types and types[option["fqn"]].get("datatype"):
            return option["fqn"], False
    return None, False


def _schema_of(fqn: str, types: dict, depth: int = 0) -> dict:
    """{"args": {name: required}, "blocks": {name: {"required": bool, **schema}}} of a struct."""
    args: dict[str, bool] = {}
    blocks: dict[str, dict] = {}
    for prop in types[fqn].get("properties", []):
        name, required = snake(prop["name"]), not prop.get("optional", False)
        struct, _ = _struct_of(prop["type"], types)
        if struct is not None and depth < 12:
            blocks[name] = {"required": required, **_schema_of(struct, types, depth + 1)}
        else:
            args[name] = required
    return {"args": args, "blocks": blocks}


def build(out: Path, wheels: list[Path]) -> None:
    schema: dict = {"versions": {}}
    for wheel in wheels:
        assembly = _jsii_assembly(wheel)
        types = assembly["types"]
        provider = assembly["name"].removeprefix("@cdktf/provider-")  # google, google-beta
        schema[provider] = {"resource": {}, "data": {}}
        for fqn, typ in types.items():
            if typ.get("kind") != "class":
                continue
            summary = (typ.get("initializer") or {}).get("docs", {}).get("summary", "")
            match = _SUMMARY.search(summary)
            config = f"{fqn}Config"
            if not match or config not in types:
                continue
            kind = "resource" if match[1] == "resources" else "data"
            schema[provider][kind][match[2]] = _schema_of(config, types)
            version = re.search(r"hashicorp/google(?:-beta)?/([\d.]+)/", summary)
            schema["versions"][provider] = version[1] if version else "?"
        print(
            f"{provider} provider {schema['versions'].get(provider)}: {len(schema[provider]['resource'])} resources, "
            f"{len(schema[provider]['data'])} data sources"
        )
    out.write_text(json.dumps(schema, sort_keys=True))


def _bodies(value) -> list[dict]:
    """A nested block's bodies as python-hcl2 gives them (a list of dicts, or one dict)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def _check_body(where: str, body: dict, schema: dict, problems: list[str], top: bool) -> None:
    present = set(body)
    for dynamic in _bodies(body.get("dynamic")):
        for name, content in dynamic.items():
            present.add(name)
            if name not in schema["blocks"]:
                problems.append(f"{where}: unknown block {name!r} (dynamic)")
                continue
            for inner in _bodies(content):
                for c in _bodies(inner.get("content")):
                    _check_body(f"{where}.{name}", c, schema["blocks"][name], problems, False)
    for key, value in body.items():
        if key == "dynamic" or key.startswith("__") or (top and key in META_ARGUMENTS):
            continue
        if key in schema["blocks"]:
            for nested in _bodies(value):
                _check_body(f"{where}.{key}", nested, schema["blocks"][key], problems, False)
        elif key not in schema["args"]:
            problems.append(f"{where}: unknown argument or block {key!r}")
    for name, required in schema["args"].items():
        if required and name not in present:
            problems.append(f"{where}: missing required argument {name!r}")
    for name, block in schema["blocks"].items():
        if block["required"] and name not in present:
            problems.append(f"{where}: missing required block {name!r}")


def _version_problems(versions: dict, versions_tf: Path, hcl2, options) -> list[str]:
    """The schema must be of a provider release that versions.tf's "~> X.Y" constraint allows."""
    if not versions_tf.exists():
        return []
    doc = hcl2.loads(versions_tf.read_text(encoding="utf-8"), serialization_options=options)
    problems = []
    for terraform in doc.get("terraform", []):
        for required in terraform.get("required_providers", []):
            for provider, spec in required.items():
                constraint = str(spec.get("version", "")) if isinstance(spec, dict) else ""
                match = re.fullmatch(r"~>\s*(\d+)\.(\d+)", constraint.strip())
                if provider not in versions or not match:
                    continue
                have = tuple(int(n) for n in versions[provider].split(".")[:2])
                low = (int(match[1]), int(match[2]))
                if not (low <= have < (low[0] + 1, 0)):
                    problems.append(
                        f"versions.tf: {provider} {constraint} does not allow the schema's {versions[provider]}"
                        " (move PROVIDER_BINDINGS_VERSION in scripts/check-infra with the range)"
                    )
    return problems


def check(schema_path: Path, infra: Path) -> list[str]:
    import hcl2

    schema = json.loads(schema_path.read_text())
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
    problems: list[str] = _version_problems(schema["versions"], infra / "versions.tf", hcl2, options)
    for path in sorted(infra.glob("*.tf")):
        doc = hcl2.loads(path.read_text(encoding="utf-8"), serialization_options=options)
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    if not rtype.startswith("google_"):
                        continue  # other providers (archive) are not checked here
                    for name, body in named.items():
                        where = f"{path.name}: {'data.' if kind == 'data' else ''}{rtype}.{name}"
                        # provider = google-beta: that provider's schema (a superset of google's)
                        provider = "google-beta" if "google-beta" in str(body.get("provider", "")) else "google"
                        types = schema[provider][kind]
                        if rtype not in types:
                            what = "data source" if kind == "data" else "resource"
                            problems.append(f"{where}: unknown {what} type in the {provider} provider")
                            continue
                        _check_body(where, body, types[rtype], problems, True)
    return problems


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "build":
        build(Path(argv[1]), [Path(w) for w in argv[2:]])
        return 0
    if len(argv) == 3 and argv[0] == "check":
        problems = check(Path(argv[1]), Path(argv[2]))
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

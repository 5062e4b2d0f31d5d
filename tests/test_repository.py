"""Repository-level rules: layering of imports, shipped files that must stay valid."""

import ast
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STDLIB_OK = {"__future__", "dataclasses", "typing", "math", "itertools", "functools", "collections"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_framework_core_imports_only_numpy_torch_and_stdlib():
    core = ["errors.py", "tabular.py", "losses.py", "evaluation.py", "algorithms/__init__.py",
            "algorithms/mpo.py"]
    for name in core:
        extra = imports_of(ROOT / "framework" / name) - STDLIB_OK - {"numpy", "torch", "framework"}
        assert not extra, f"framework/{name} imports {extra}"


def test_nothing_under_framework_imports_ray_vllm_or_opacus_except_the_edges():
    """Model loading and the CLI are the edges; the driver reaches Ray only through actors.remote."""
    edges = {"models.py", "cli.py"}
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "framework").rglob("*.py")
                 if p.name not in edges and {"ray", "vllm", "opacus"} & imports_of(p)]
    assert not offenders, offenders


def test_games_never_import_actors_and_ray_stays_at_the_edges():
    for path in (ROOT / "games").rglob("*.py"):
        names = imports_of(path)
        assert "actors" not in names, path
        if path.name != "rllib_env.py":  # RLlib's env interface is the one edge inside games/
            assert "ray" not in names, path


def test_cluster_yaml_validates_against_rays_launcher_schema():
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    bad = dict(config, unknown_field=1)
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the schema should reject unknown top-level fields")


def test_readme_names_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text().strip().splitlines()

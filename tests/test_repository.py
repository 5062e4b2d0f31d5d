"""Repository-level rules: the layering of every module, no import circles, short functions, no
method names in the shared pipeline, and shipped files that must stay valid.

``python tests/test_repository.py`` prints the import graph (file → the project files it imports).
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("framework", "actors", "games", "privacy")
STDLIB_OK = {"__future__", "dataclasses", "typing", "math", "itertools", "functools", "collections", "pathlib",
             "json"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Top-level names of everything a file imports, anywhere in it (function bodies included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def project_imports(path: Path) -> set[str]:
    """The project modules a file imports, anywhere in it: ``from a.b import c`` is ``a.b.c`` when
    that is a module, else ``a.b``."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES:
            for a in node.names:
                out.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module)
    return out - {module_name(path)}


GRAPH = {name: sorted(project_imports(path)) for name, path in MODULES.items()}


def tier(name: str) -> str:
    """framework/ is a floor of shared pieces under a roof of jobs, under the command line."""
    if not name.startswith("framework"):
        return name.split(".")[0]
    if name == "framework.cli":
        return "cli"
    return "roof" if name.startswith("framework.jobs") else "floor"


#: privacy/ from the bottom up: an import may only reach a lower layer
PRIVACY_LAYERS = {"privacy": 0, "privacy.accounting": 0, "privacy.audit": 0, "privacy.corpus": 0,
                  "privacy.adambc": 0, "privacy.engine.checks": 0,
                  "privacy.engine.clipping": 0, "privacy.diagnostics": 1, "privacy.engine.bookkeeping": 1,
                  "privacy.engine.opacus": 1, "privacy.engine.factory": 2, "privacy.engine": 3, "privacy.learner": 4}


def test_the_import_graph_has_no_circle():
    state: dict = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in GRAPH[node]:
            if state.get(nxt) == "open":
                raise AssertionError("import circle: " + " → ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for name in GRAPH:
        if name not in state:
            visit(name, [name])


def test_the_floor_imports_neither_jobs_actors_privacy_nor_games_and_nothing_imports_upward():
    allowed = {"floor": {"floor"}, "roof": {"floor", "roof", "actors", "games", "privacy"},
               "cli": {"floor", "roof", "cli", "games"}, "actors": {"floor", "actors", "games"},
               "privacy": {"floor", "privacy"}, "games": {"games"}}
    bad = [(a, b) for a, deps in GRAPH.items() for b in deps if tier(b) not in allowed[tier(a)]]
    # games may use one piece of the floor: its errors
    bad = [(a, b) for a, b in bad if not (tier(a) == "games" and b == "framework.errors")]
    assert not bad, bad
    games = [(a, b) for a, deps in GRAPH.items() if tier(a) == "games" for b in deps if tier(b) == "floor"]
    assert all(b == "framework.errors" for _, b in games), games


def test_privacy_modules_import_only_lower_layers():
    assert set(PRIVACY_LAYERS) == {m for m in MODULES if m.startswith("privacy")}, "place a new module in a layer"
    bad = [(a, b) for a, deps in GRAPH.items() if a.startswith("privacy") for b in deps
           if b.startswith("privacy") and PRIVACY_LAYERS[b] >= PRIVACY_LAYERS[a]]
    assert not bad, bad


def test_framework_core_imports_only_numpy_torch_and_stdlib():
    core = ["errors.py", "records.py", "batching.py", "losses.py", "evaluation.py",
            *(p.relative_to(ROOT / "framework").as_posix() for p in (ROOT / "framework" / "algorithms").glob("*.py"))]
    for name in core:
        extra = imports_of(ROOT / "framework" / name) - STDLIB_OK - {"numpy", "torch", "framework"}
        extra -= {"pyarrow", "queue", "threading"} if name == "records.py" else set()  # Parquet, written in the background
        assert not extra, f"framework/{name} imports {extra}"


def test_nothing_under_framework_imports_ray_vllm_or_opacus_except_the_edges():
    """Model loading and the CLI are the edges; the jobs reach Ray only through actors.remote."""
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


def test_no_function_is_longer_than_80_lines():
    long = [f"{module}.{node.name}: {node.end_lineno - node.lineno + 1}" for module, path in MODULES.items()
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert not long, long


def test_the_shared_pipeline_names_no_method():
    """The self-play loop, the learner and the generator reach methods through their hooks only."""
    from framework.algorithms.registry import algorithm_names

    names = set(algorithm_names())
    for rel in ("framework/jobs/selfplay.py", "actors/learner.py", "actors/generator.py"):
        tree = ast.parse((ROOT / rel).read_text())
        named = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in names]
        assert not named, (rel, named)


def test_every_job_value_has_its_job_and_no_issue_numbers_in_the_code():
    from framework.config import JOB_NAMES
    from framework.jobs import JOBS

    assert set(JOBS) == set(JOB_NAMES)
    mentions = [f"{m}: {hit}" for m, p in MODULES.items() for hit in re.findall(r"[Ii]ssue \d+", p.read_text())]
    assert not mentions, mentions


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_the_cluster_launcher_files_pass_rays_own_check(name):
    """What ``ray up`` checks before it contacts a cloud or a machine."""
    import copy

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    bad = dict(copy.deepcopy(config), head_node_ip="10.0.0.10")  # not a launcher field
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_readme_names_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text().strip().splitlines()


if __name__ == "__main__":
    def file(name: str) -> str:
        return MODULES[name].relative_to(ROOT).as_posix()

    width = max(len(file(name)) for name in GRAPH)
    for name, deps in GRAPH.items():
        print(f"{file(name):<{width}} → {', '.join(map(file, deps)) if deps else '—'}")

"""Every config field is read by the code: a field nothing reads is a knob that silently does nothing.

A light static analysis over the project's modules outside ``configs/`` and ``tests/``: an expression is known
to hold a config class when it is a parameter annotated with that class, a ``.section`` attribute of the
pipeline config (``cfg.post_train.sft`` holds ``SFTPhaseConfig``), or a name assigned from such an expression;
reading ``.field`` (or ``getattr(x, "field")``) on it counts as a read of that class's field. Names are tracked
per module, not per scope, so the check can over-count a read, never invent a missing one.
"""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from configs.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {"configs", "tests", "data"}
# Programs that live beside the configs and read them as any stage does: not declarations, so their reads count.
CONFIG_READERS = ("plan.py",)  # the paper-scale planner reads the cluster layout (configs.cluster)

# Read through a generic mechanism, not by attribute name in our code.
WHOLE_CLASS_WHITELIST = {
    # The official Hugging Face config keys: exported as a whole into config.json (model.export) and read there by
    # the modeling code, transformers and vLLM, under a config object our analysis cannot type.
    "ModelConfig": "exported whole as the checkpoint's config.json",
    # ModelConfig.rope_scaling: exported whole as config.json's rope_scaling and read there by key
    # (model.layers.rope_scaling_value), by our modeling code, transformers and vLLM alike.
    "RopeScalingConfig": "exported whole as config.json's rope_scaling",
}
FIELD_WHITELIST = {
    # Chosen by name from the config in a loop over the phase names (training.migrate.run: getattr(mcfg, name)).
    ("MigrateConfig", "linear_warmup"): "read as getattr(mcfg, phase) over PHASES",
    ("MigrateConfig", "partial_training"): "read as getattr(mcfg, phase) over PHASES",
    ("MigrateConfig", "mla_warmup"): "read as getattr(mcfg, phase) over PHASES",
    ("MigrateConfig", "continued_pretraining"): "read as getattr(mcfg, phase) over PHASES",
    # The run's identity: written into every manifest and tag with the flattened config, selected by `resolve`.
    ("PipelineConfig", "profile"): "recorded with the flattened config; chooses nothing at run time",
}


def _config_classes() -> dict[str, type]:
    found: dict[str, type] = {}

    def walk(cls: type) -> None:
        if cls.__name__ in found:
            return
        found[cls.__name__] = cls
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            for tp in (hints[field.name], *typing.get_args(hints[field.name])):
                if dataclasses.is_dataclass(tp):
                    walk(tp)

    walk(PipelineConfig)
    return found


def _section_types(classes: dict[str, type]) -> dict[str, set[str]]:
    """Attribute name -> the config classes a field of that name holds (``optim`` -> OptimConfig, PhaseOptimConfig)."""
    sections: dict[str, set[str]] = {}
    for cls in classes.values():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            for tp in (hints[field.name], *typing.get_args(hints[field.name])):
                if dataclasses.is_dataclass(tp):
                    sections.setdefault(field.name, set()).add(tp.__name__)
    return sections


def _annotation_classes(node: ast.expr | None, classes: dict[str, type]) -> set[str]:
    if node is None:
        return set()
    return {
        n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute)
    } & set(classes)


def _reads_in_module(
    tree: ast.Module,
    classes: dict[str, type],
    sections: dict[str, set[str]],
    attrs: dict[str, set[str]],
    *,
    self_class: bool = False,
) -> set[tuple[str, str]]:
    """Config field reads in one module. ``attrs`` (attribute name -> config classes assigned to it, as in
    ``self.cfg = cfg``) is shared by all modules: a class stores its config in one module and reads it in its
    subclasses' modules."""
    names: dict[str, set[str]] = {}  # local and module names
    holders = {
        attr: {c for c, cls in classes.items() if attr in {f.name for f in dataclasses.fields(cls)}}
        for attr in sections
    }

    def kinds(expr: ast.expr) -> set[str]:
        if isinstance(expr, ast.Name):
            return names.get(expr.id, set())
        if isinstance(expr, ast.Attribute):
            if expr.attr in sections:
                return sections[expr.attr]
            return attrs.get(expr.attr, set())
        if isinstance(expr, ast.BoolOp):  # cfg or EnvironmentsConfig()
            return set().union(*(kinds(v) for v in expr.values))
        if isinstance(expr, ast.IfExp):
            return kinds(expr.body) | kinds(expr.orelse)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in classes:
            return {expr.func.id}
        return set()

    def bind(target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                bind(t, v)
        elif isinstance(target, ast.Name):
            names.setdefault(target.id, set()).update(kinds(value))
        elif isinstance(target, ast.Attribute):
            attrs.setdefault(target.attr, set()).update(kinds(value))

    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            names.setdefault(node.arg, set()).update(_annotation_classes(node.annotation, classes))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.setdefault(node.target.id, set()).update(_annotation_classes(node.annotation, classes))
        elif self_class and isinstance(node, ast.ClassDef) and node.name in classes:
            names.setdefault("self", set()).add(node.name)
    # Assignments chain (p = cfg.post_train; s = p.sft): iterate to a fixed point.
    for _ in range(4):
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    bind(target, node.value)
            elif isinstance(node, ast.NamedExpr):
                bind(node.target, node.value)
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = kinds(node.value)
            # A section read off an untyped pipeline config (`cfg.curate` with `cfg` unannotated) still reads it.
            reads.update((cls, node.attr) for cls in owner or holders.get(node.attr, set()))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            reads.update((cls, node.args[1].value) for cls in kinds(node.args[0]))
    return reads


def _config_methods(path: Path) -> ast.Module:
    """The methods of config classes other than validation: ``PhaseOptimConfig.for_updates`` reads its fields for
    the engine, while ``__post_init__`` only checks them (a field read only there is still unused)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tree.body = [node for node in tree.body if isinstance(node, ast.ClassDef)]  # profiles construct, not read
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            node.body = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name != "__post_init__"]
    return tree


def _project_modules() -> list[Path]:
    return [
        path
        for path in ROOT.rglob("*.py")
        if (rel := path.relative_to(ROOT)).parts[0] not in SKIP_DIRS and not any(p.startswith(".") for p in rel.parts)
    ] + [ROOT / "configs" / name for name in CONFIG_READERS]


def unread_fields(classes: dict[str, type] | None = None) -> list[str]:
    classes = classes or _config_classes()
    sections = _section_types(_config_classes())
    trees = [(ast.parse(path.read_text(encoding="utf-8")), False) for path in _project_modules()]
    trees += [(_config_methods(path), True) for path in sorted((ROOT / "configs").glob("*.py"))]
    attrs: dict[str, set[str]] = {}
    reads: set[tuple[str, str]] = set()
    for _ in range(2):  # the first pass collects the shared attributes, the second reads with all of them
        for tree, self_class in trees:
            reads |= _reads_in_module(tree, classes, sections, attrs, self_class=self_class)
    missing = []
    for name, cls in sorted(classes.items()):
        if name in WHOLE_CLASS_WHITELIST:
            continue
        for field in dataclasses.fields(cls):
            if (name, field.name) not in reads and (name, field.name) not in FIELD_WHITELIST:
                missing.append(f"{name}.{field.name}")
    return missing


def test_whitelist_names_real_fields():
    classes = _config_classes()
    for name, field in FIELD_WHITELIST:
        assert field in {f.name for f in dataclasses.fields(classes[name])}, f"stale whitelist entry {name}.{field}"


def test_every_config_field_is_read_outside_configs_and_tests():
    missing = unread_fields()
    assert not missing, f"config fields nothing reads (remove them, or whitelist with a reason): {missing}"


def test_the_check_finds_a_field_nothing_reads():
    # A field added to a section and read nowhere must be reported: the analysis is not vacuous.
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Probe:
        shard_tokens: int = 1
        never_read_anywhere: int = 2

    missing = unread_fields({**_config_classes(), "CurateConfig": Probe})
    assert "CurateConfig.never_read_anywhere" in missing and "CurateConfig.shard_tokens" not in missing

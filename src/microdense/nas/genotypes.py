"""DARTS-space genotypes as data: the published ones, and a parser that refuses bad ones clearly.

Each entry of a cell's list is an `Edge` (operation, input state); node k = 2..5 sums the outputs of
entries 2(k-2) and 2(k-2)+1; states 0 and 1 are the two previous cells' outputs; the cell output
concatenates `concat` (nodes 2-5 by default). Liu et al., "DARTS: Differentiable Architecture Search".
"""
import ast
import json
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Tuple

from microdense.errors import ConfigError


OPERATIONS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")
STEPS = 4  # intermediate nodes per cell

Edge = Tuple[str, int]  # an operation and the state it reads


class Genotype(NamedTuple):
    normal: List[Edge]
    normal_concat: List[int]
    reduce: List[Edge]
    reduce_concat: List[int]


DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)
GENOTYPES: Dict[str, Genotype] = {"DARTS_V1": DARTS_V1, "DARTS_V2": DARTS_V2}


def validate(genotype: Genotype) -> Genotype:
    """Refuse a genotype that cannot be built, naming the bad entry."""
    for cell in ("normal", "reduce"):
        entries = getattr(genotype, cell)
        if len(entries) != 2 * STEPS:
            raise ConfigError(f"genotype {cell} cell has {len(entries)} entries; a DARTS cell needs {2 * STEPS} "
                            f"(two per node, {STEPS} nodes)")
        for i, entry in enumerate(entries):
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                raise ConfigError(f"genotype {cell} entry {i} is {entry!r}; expected (operation, input)")
            op, src = entry
            if op not in OPERATIONS:
                raise ConfigError(f"genotype {cell} entry {i} {tuple(entry)!r}: unknown operation {op!r}; "
                                f"choose one of {', '.join(OPERATIONS)}")
            node = 2 + i // 2
            if not isinstance(src, int) or not 0 <= src < node:
                raise ConfigError(f"genotype {cell} entry {i} {tuple(entry)!r}: input {src!r} out of range; "
                                f"node {node} may read states 0..{node - 1}")
        concat = getattr(genotype, f"{cell}_concat")
        if not concat or any(not isinstance(c, int) or not 0 <= c < 2 + STEPS for c in concat):
            raise ConfigError(f"genotype {cell}_concat {concat!r}: states must lie in 0..{1 + STEPS}")
    return genotype


def _from_mapping(data: Dict[str, Any]) -> Genotype:
    missing = {"normal", "reduce"} - set(data)
    if missing:
        raise ConfigError(f"genotype is missing {sorted(missing)}; give normal, reduce (and optionally *_concat)")
    default = list(range(2, 2 + STEPS))
    return Genotype(
        normal=[tuple(e) if isinstance(e, (list, tuple)) else e for e in data["normal"]],
        normal_concat=list(data.get("normal_concat", default)),
        reduce=[tuple(e) if isinstance(e, (list, tuple)) else e for e in data["reduce"]],
        reduce_concat=list(data.get("reduce_concat", default)),
    )


def parse_genotype(text: str) -> Genotype:
    """A genotype from a published name ("DARTS_V2"), a JSON file or JSON text, or DARTS's own repr
    `Genotype(normal=[...], normal_concat=[...], reduce=[...], reduce_concat=[...])`. Never evaluates code."""
    text = text.strip()
    if text in GENOTYPES:
        return GENOTYPES[text]
    if not text.startswith(("{", "Genotype")) and Path(text).is_file():
        text = Path(text).read_text().strip()
    try:
        if text.startswith("{"):
            data = json.loads(text)
        elif text.startswith("Genotype"):
            call = ast.parse(text, mode="eval").body
            if not isinstance(call, ast.Call):
                raise ConfigError("not a Genotype(...) call")
            data = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
        else:
            raise ConfigError(f"genotype {text[:60]!r} is not a known name ({', '.join(GENOTYPES)}), a JSON file, "
                            "JSON text or a Genotype(...) string")
    except (ValueError, SyntaxError) as e:
        raise ConfigError(f"genotype could not be read: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("genotype JSON must be an object with normal and reduce lists")
    return validate(_from_mapping(data))


def genotype_to_json(genotype: Genotype) -> str:
    return json.dumps(genotype._asdict())

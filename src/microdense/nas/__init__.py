"""DARTS-space cell networks and their micro-dense integration; importing registers them with timm."""
from microdense.nas import network  # noqa: F401
from microdense.nas.genotypes import DARTS_V1, DARTS_V2, GENOTYPES, Genotype, parse_genotype

__all__ = ["DARTS_V1", "DARTS_V2", "GENOTYPES", "Genotype", "parse_genotype"]

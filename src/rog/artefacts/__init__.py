"""Worst-case scanner artefacts: differentiable artefact models on `rog.corruptions`' severity
scale (`models`) and the search for the worst one at each severity (`search`)."""
from rog.artefacts.models import ARTEFACTS, Artefact, expand, make_artefact
from rog.artefacts.search import Outcome, worst_artefact

__all__ = ["ARTEFACTS", "Artefact", "Outcome", "expand", "make_artefact", "worst_artefact"]

"""The declarative study modules, one per paper (``ctrgraph reproduce --list``)."""
from __future__ import annotations

from ...errors import ConfigError
from ..core import Study
from . import deminet, dg_enn, egin, graphfm, res_embedding

STUDIES: dict[str, Study] = {s.paper: s for s in (dg_enn.STUDY, graphfm.STUDY, res_embedding.STUDY, deminet.STUDY, egin.STUDY)}


def get_study(paper: str) -> Study:
    if paper not in STUDIES:
        raise ConfigError(f"unknown paper {paper!r}; known: {', '.join(STUDIES)}")
    return STUDIES[paper]

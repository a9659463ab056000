"""Few-shot inversion of the SynShot prior (pivotal tuning) into a drivable avatar.

Entry points: ``synshot invert`` (run.py), ``synshot drive``.
Modules: subject (folder format + validation), unwrap (UV texture from images), pti (the two
stages), avatar (save/load/render), export (.ply, turntable, metrics), arcface (identity loss).
"""

from synshot.invert.config import InvertConfig
from synshot.invert.subject import Subject, SubjectError, load_subject

__all__ = ["InvertConfig", "Subject", "SubjectError", "load_subject"]

"""Seeing and driving an avatar: the browser viewer (``synshot view``) and exports for splat viewers.

Modules: plyseq (a driven sequence baked to world-space 3DGS .ply frames + frames.json, optional
SuperSplat compressed form), prior_avatar (the prior's average identity as an avatar).
"""

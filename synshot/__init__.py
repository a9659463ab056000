"""SynShot: synthetic 3D Gaussian head prior and few-shot pivotal-tuning inversion.

Importing the package has no side effects; heavy dependencies are imported by the modules that
need them.
"""

__version__ = "0.1.0"

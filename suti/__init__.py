"""SuTI engine: subject-driven in-context image generation (SuTI / Re-Imagen style)."""

__version__ = "0.1.0"

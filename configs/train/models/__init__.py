"""Model layouts used by training recipes that are not top-level presets."""

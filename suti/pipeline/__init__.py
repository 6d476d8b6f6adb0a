"""SuTIPipeline (a diffusers DiffusionPipeline), guidance planning and demo preprocessing."""

from suti.pipeline.guidance import GUIDANCE_MODES, GuidancePass, combine, plan_passes
from suti.pipeline.pipeline_suti import SuTIPipeline, SuTIPipelineOutput
from suti.pipeline.preprocess import prepare_demo_images, to_rgb_image

__all__ = [
    "GUIDANCE_MODES", "GuidancePass", "SuTIPipeline", "SuTIPipelineOutput", "combine", "plan_passes",
    "prepare_demo_images", "to_rgb_image",
]

"""Ground-truth ray tracer (Mitsuba 3) for synthetic heads: path tracing under procedural
environment maps with soft key lights. See docs/head.md."""

from synshot.raytrace.lighting import environment_map, lighting_params
from synshot.raytrace.tracer import RENDERER_NAME, RayTraceConfig, RayTracer, camera_to_mitsuba

__all__ = ["RENDERER_NAME", "RayTraceConfig", "RayTracer", "camera_to_mitsuba", "environment_map", "lighting_params"]

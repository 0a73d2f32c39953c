"""Process-wide CPU settings that must be made before torch starts its worker threads."""

import torch

# Denormal floats (tiny Adam moments, near-dead activations) are ~100x slower on x86 CPUs.
# Flush-to-zero is a per-thread flag that torch's worker threads copy from the thread that
# starts them, so it is set here, before the intra-op pool exists: set later (as `train`
# used to), the worker thread kept denormals and the fused Adam step measured 2-4x slower.
torch.set_flush_denormal(True)

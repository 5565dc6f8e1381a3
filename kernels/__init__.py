"""ling26 kernels: fast Triton ops, each with a pure-torch reference, and the one device decision.

``import kernels`` can be shadowed by Hugging Face's ``kernels`` distribution; ``KERNELS_PACKAGE``
lets a test check that the name resolved to this package.
"""

from kernels.dispatch import default_device, device_summary, use_triton

KERNELS_PACKAGE = "ling26"

__all__ = ["KERNELS_PACKAGE", "default_device", "device_summary", "use_triton"]

"""dubtool: dialogue localization for 3D facial animation (ARKit blendshape curves)."""

__version__ = "0.1.0"

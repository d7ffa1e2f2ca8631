"""Pre-training objectives on image-caption pairs, one file per concept.

- ``mlm``: BERT's masked language modelling, conditioned on the image (Pixel-BERT, SOHO).
- ``itm``: image-text matching with sampled mismatched pairs (Pixel-BERT, SOHO).
- ``pixelbert.soho.mvm``: SOHO's masked visual modelling.
- ``heads``: the pre-training heads; ``step``: all chosen objectives from one forward pass.

Random pixel sampling is ``pixelbert.pixel_encoder.sample_pixels``, switched on by the pre-training loop.
(No re-exports here: ``pixelbert.soho`` imports ``objective`` and would otherwise import itself in a cycle.)
"""

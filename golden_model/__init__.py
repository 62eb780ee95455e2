"""golden_model: float (trainable) and bit-accurate integer models of spiking video transformers.

* :mod:`golden_model.svformer`, :mod:`golden_model.spikevideoformer`: float models (``floating_pt``).
* :mod:`golden_model.intops`: the integer primitives (the contract the RTL implements).
* :mod:`golden_model.zoo`: build any model by name.
"""

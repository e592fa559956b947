"""The model family: Transformer++, Titans (MAG) and HOPE on one chunk-recurrent backbone.

Where things are (docs/MODEL_DECISIONS.md for the equations and the why):
    config.py          ModelConfig, TeachConfig, ClipConfig (params.yaml model/teach/clip)
    presets.py         tiny, 340m, 760m, 1.3b; model_config() resolves a params mapping
    lm.py              NestedLM: step/forward recurrence, state, build_model
    attention.py       rotary causal attention (full | swa) with a bounded cache
    combine.py         the mixers: MemoryAsGate (titan and hope), AttentionMixer
    memory.py          NeuralMemory: the Titans LMM, Eqs. 12-16
    self_modifying.py  SelfModifyingMemory: HOPE's self-modifying Titans
    cms.py             ContinuumMemory: Eqs. 30-31
    teach.py           teach_signal: the per-token gradient at the top of the stream
"""
from nlrepro.model.config import ClipConfig, CMSConfig, CMSLevel, MemoryConfig, ModelConfig, SelfModConfig, TeachConfig
from nlrepro.model.lm import ForwardResult, ModelState, NestedLM, build_model
from nlrepro.model.presets import PRESETS, model_config, preset_config

__all__ = [
    "ClipConfig", "CMSConfig", "CMSLevel", "MemoryConfig", "ModelConfig", "SelfModConfig", "TeachConfig",
    "ForwardResult", "ModelState", "NestedLM", "build_model", "PRESETS", "model_config", "preset_config",
]

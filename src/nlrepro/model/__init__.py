"""The model family: Transformer++, Titans (MAG) and HOPE on one chunk-recurrent backbone.

Where things are (docs/MODEL_DECISIONS.md for the equations and the why):
    config.py          ModelConfig (params.yaml model), InContextConfig, VARIANTS
    presets.py         tiny, 340m, 760m, 1.3b; model_config() resolves a params mapping
    lm.py              NestedLM: step/forward recurrence, state, build_model
    attention.py       rotary causal attention (full | swa) with a bounded cache
    combine.py         the mixers: MemoryAsGate (titan and hope), AttentionMixer
    memory.py          NeuralMemory: the Titans LMM, Eqs. 12-16
    self_modifying.py  SelfModifyingMemory: HOPE's self-modifying Titans
    cms.py             ContinuumMemory: Eqs. 30-31
    teach.py           teach_signal: the per-token gradient at the top of the stream

Import from the module that defines a name (``nlrepro.model.lm.build_model``): the
package re-exports nothing, so ``nlrepro.model.config`` imports without torch (the data
stages read params.yaml through it).
"""

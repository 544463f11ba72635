"""The machinery every architecture shares. It knows none of them: what it needs from a model
it asks through `transformer.Transformer`'s methods, and from a prompt method through
`prompt_method.PromptMethod`'s three hooks.

    attention.py      one multi-head attention (explicit and fused paths), concat_prefix
    masks.py          keep-masks: padding, causality, prefix columns
    prompt_rows.py    P rows in front, sliced off after (shallow and deep prompts)
    layer.py          the layer contract (keywords in, LayerOutput out)
    stack.py          the layer loop: inject-process-slice and K/V prefix side by side
    transformer.py    the model interface and the one forward body
    causal_lm.py      logits, LM loss, KV cache and generation for every decoder
    capture.py        named capture points (record) and their listeners
"""

"""The toolkit: what methods are built from. PGD and its helpers (`attacks`), JPEG and
its differentiable twin (`codecs`), the fine-tuning loop of trainable bypasses
(`finetune`), the warning mark (`marks`), feature networks (`features`, `classifier`),
the generators' training frame (`training`), a tiny generator to check plugins
against (`tiny_generator`), running generators over many inputs (`generation`), data
sets (`data`, `demo_faces`), the metric table (`metrics`) and its networks (`fid`,
`inception`, `brisque`, `clip_score`), and the budget a protection is measured against
(`budget`).

It imports the contract only, never the harness.
"""

"""The references the library is checked against, in the library because both the tests and the scripts use them.

- :mod:`.oracle`: the masked-reference oracle (``masked_reference``): the full sequence under eager attention,
  every dropped image token masked out as a key, against which physical pruning must match. The test suite
  asserts it on tiny models; ``scripts/gpu/oracle.py`` measures it at full size on a GPU.
- :mod:`.reference_scorers`: slow, direct re-implementations of each method's selection rule, which the oracle
  and the scorer tests use. They are independent of :mod:`SequentialPrune.scorers` on purpose: a reference
  that shared code with what it checks could not catch that code's mistakes.

As with transformers' ``testing_utils``, nothing here is imported by ``import SequentialPrune``: importing
:mod:`.oracle` registers its own attention implementation with transformers, which only a check should do.
"""

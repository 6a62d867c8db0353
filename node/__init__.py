"""``referendum node``: a stakeholder's node (issue 14). This half: the C2SP witness.

Modules: :mod:`node.store` (the node's tables: latest cosigned checkpoint per origin,
split-view evidence), :mod:`node.witness` (add-checkpoint: decide, persist, cosign),
:mod:`node.app` (the aiohttp service), :mod:`node.follow` (pull the operator's checkpoints
through the same witness path), :mod:`node.commands` (the click command). The verified replica
of the log (blocks, ballots, tally) grows here next, beside the witness.
"""

"""Replace Lambda and custom layers by Keras layers the user names: replace, never run.

bnconvert never runs a Lambda's bytecode nor imports a custom class (:mod:`bnconvert.readers.code`),
so a model holding one cannot be checked, folded through or exported as it is. The user, who knows
what the code does, says it with Keras layer configs::

    bnconvert export carnd.h5 -o carnd.onnx \\
        --replace 'lambda={"class_name": "Rescaling", "config": {"scale": 0.00392156862745098, "offset": -0.5}}'

A :class:`Replacement` maps a *target* to one Keras layer config or a short chain of them (a JSON
list: the layers run in sequence). The target is a layer name (a nested layer by its path,
``outer/inner``) or a class name (every layer of that class); a name wins over a class. What is
applied to the model as read (:func:`apply_replacements`), before audit, fold, export or check:

- each replacement config passes the config checks of its class (catalog ``fields``: it is
  untrusted input like a file's config), and its class must be one bnconvert runs;
- the replaced layer's weights go, in order, to the weights the replacement's classes declare
  (their catalog ``weights`` rule), when the counts and the shapes agree; otherwise one line says
  why (weights are never dropped or invented);
- the chain's output shape must be the one the file declares for the layer (a Lambda's
  ``output_shape``, the shape a Keras 3 config records for the tensors its consumers read), and
  the weights of every later layer must still fit (:func:`~bnconvert.readers.consistency.check_weights`);
- a replacement that names no layer of the model is an error (typo protection);
- one replacement layer keeps the replaced layer's name, and so does a chain's first layer with
  weights; a chain's other layers get fresh unique names (``<name>_<class>``), wired in sequence.

The model's ``source.config`` (the file's own config, what the writers edit) is rewritten the same
way, so a folded file is the *replaced* model and loads in Keras without the Lambda or the custom
class; ``source.replaced`` lists what was replaced, and every check then runs the replaced model in
bnconvert's float64 reference and says so (Keras would run the file's own code).
"""

from __future__ import annotations

from .apply import apply_replacements
from .listing import (
    declared_shapes,
    opaque_layers,
    refuse_in_keras,
    replace_line,
    src_replaced,
)
from .names import chain_names
from .spec import (
    MAX_CHAIN,
    Replacement,
    ReplacementError,
    ReplacementsLike,
    as_replacements,
    parse_replace_option,
    read_replacements,
)

__all__ = ["MAX_CHAIN", "Replacement", "ReplacementError", "ReplacementsLike", "apply_replacements", "as_replacements",
           "chain_names", "declared_shapes", "opaque_layers", "parse_replace_option", "read_replacements",
           "refuse_in_keras", "replace_line", "src_replaced"]

"""Studies as data: the experiments core (:mod:`.core`), the kinds of study items (:mod:`.items`),
what they report (:mod:`.stats`, :mod:`.analysis`), the one table writer (:mod:`.tables`), the HTML
report (:mod:`.html_report`), ``ctrgraph compare`` (:mod:`.compare`) and one declarative module per
paper (:mod:`.studies`)."""

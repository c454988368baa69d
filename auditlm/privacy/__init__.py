"""Privacy domain helpers the privacy scorers use: the Presidio PII scanner and redaction (:mod:`.pii`),
the detector's own evaluation on labelled synthetic PII (:mod:`.detector_eval`), and canaries
(:mod:`.canaries`)."""

"""Run directories: assembling and training one run (:mod:`.assemble`), its identity (:mod:`.identity`),
and what reads a finished run: evaluate / score (:mod:`.scoring`), predict, explain, export."""

#!/usr/bin/env bash
# The paper's three classes from the Materials Project (needs MP_API_KEY and `pip install -e ".[mp]"`):
# cubic binaries AB, perovskites ABX3 and Heuslers X2YZ with at most 40 sites, conditioned on formation energy.
set -euo pipefail
: "${MP_API_KEY:?set MP_API_KEY to your Materials Project API key}"
icsg prepare mp:binary mp:perovskite mp:heusler --out runs/data/mp_paper --property formation_energy_per_atom

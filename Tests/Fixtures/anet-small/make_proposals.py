"""Writes proposals_expected.json: the official ActivityNet proposal metric (Evaluation/eval_proposal.py)
on this folder's ground truth, with predictions.json read as proposals (labels ignored).

    python make_proposals.py /path/to/ActivityNet/Evaluation

The official files are Python 2; scripts/anet_eval_python.py loads them from that folder and adapts
them in memory (print statements, iteritems, urllib2, np.int / np.float, xrange, np.trapz) without
changing any computation.
"""
import json, os, sys

import numpy as np

src_dir = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))


sys.path.insert(0, os.path.join(here, "..", "..", "..", "scripts"))
from anet_eval_python import load_official  # noqa: E402

ep = load_official(src_dir)("eval_proposal")
out = {"note": "official ActivityNet Evaluation/eval_proposal.py (check_status=False, subset=validation); proposals = predictions.json", "runs": []}
for max_avg in [100, 2, 5]:
    ev = ep.ANETproposal(os.path.join(here, "ground_truth.json"), os.path.join(here, "predictions.json"),
                         tiou_thresholds=np.linspace(0.5, 0.95, 10), max_avg_nr_proposals=max_avg,
                         subset="validation", verbose=False, check_status=False)
    ev.evaluate()
    auc = float(np.trapezoid(ev.avg_recall, ev.proposals_per_video))
    out["runs"].append({"max_avg_nr_proposals": max_avg, "average_recall": [float(x) for x in ev.avg_recall],
                        "proposals_per_video": [float(x) for x in ev.proposals_per_video], "auc": auc})
json.dump(out, open(os.path.join(here, "proposals_expected.json"), "w"), indent=1)
print("wrote proposals_expected.json")

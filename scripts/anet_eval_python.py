"""ActivityNet-1.3 detection mAP in Python, timed — the reference side of `menagerie bench`'s
`faster_tad.evaluate_5000`.

    python scripts/anet_eval_python.py GROUND_TRUTH.json PREDICTIONS.json [--official DIR]

With --official (or ANET_EVAL=DIR), DIR is the official ActivityNet `Evaluation/` folder and its
`eval_detection.py` runs (it is Python 2; adapted in memory: print statements, iteritems, urllib2,
np.float / np.int, numpy 2's trapezoid — no computation changes; blocked-video lookup off).
Without it, the same algorithm runs as written below in the official code's pandas style (group-by
per class and video, `iterrows` over predictions), so the timing is representative of it.
Prints one JSON line: {"average_mAP", "mAP", "seconds", "evaluator"}.
"""
import argparse, json, os, re, sys, time

import numpy as np
import pandas as pd


def load_official(src_dir):
    """A loader of the official modules from DIR, adapted to Python 3 and written to a temporary
    folder on the import path (joblib's worker processes import them by name)."""
    import importlib, tempfile
    out = tempfile.mkdtemp(prefix="anet-official-")
    for name in ("utils", "eval_detection", "eval_proposal"):
        path = os.path.join(src_dir, name + ".py")
        if not os.path.exists(path):
            continue
        text = open(path).read()
        text = text.replace("import urllib2", "import urllib.request as urllib2")
        text = text.replace(".iteritems()", ".items()").replace("xrange(", "range(")
        text = text.replace("np.float)", "float)").replace("astype(np.int)", "astype(int)")
        text = text.replace("np.trapz(", "np.trapezoid(")
        text = re.sub(r"^(\s*)print (.*)$", r"\1print(\2)", text, flags=re.M)
        open(os.path.join(out, name + ".py"), "w").write(text)
    sys.path.insert(0, out)
    os.environ["PYTHONPATH"] = out + os.pathsep + os.environ.get("PYTHONPATH", "")
    return importlib.import_module


def frames(gt_path, pred_path, subset):
    gt = json.load(open(gt_path))
    index, rows = {}, []
    for vid, v in gt["database"].items():
        if v["subset"] != subset:
            continue
        for a in v["annotations"]:
            index.setdefault(a["label"], len(index))
            rows.append((vid, float(a["segment"][0]), float(a["segment"][1]), index[a["label"]]))
    ground_truth = pd.DataFrame(rows, columns=["video-id", "t-start", "t-end", "label"])
    pred = json.load(open(pred_path))
    rows = []
    for vid, v in pred["results"].items():
        for r in v:
            rows.append((vid, float(r["segment"][0]), float(r["segment"][1]), index[r["label"]], r["score"]))
    prediction = pd.DataFrame(rows, columns=["video-id", "t-start", "t-end", "label", "score"])
    return ground_truth, prediction, index


def segment_iou(target, candidates):
    tt1 = np.maximum(target[0], candidates[:, 0])
    tt2 = np.minimum(target[1], candidates[:, 1])
    inter = (tt2 - tt1).clip(0)
    union = (candidates[:, 1] - candidates[:, 0]) + (target[1] - target[0]) - inter
    return inter.astype(float) / union


def voc_ap(prec, rec):
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def class_ap(ground_truth, prediction, thresholds):
    ap = np.zeros(len(thresholds))
    if prediction.empty:
        return ap
    npos = float(len(ground_truth))
    lock = np.ones((len(thresholds), len(ground_truth))) * -1
    order = prediction["score"].values.argsort(kind="stable")[::-1]
    prediction = prediction.loc[order].reset_index(drop=True)
    tp = np.zeros((len(thresholds), len(prediction)))
    fp = np.zeros((len(thresholds), len(prediction)))
    by_video = ground_truth.groupby("video-id")
    for idx, p in prediction.iterrows():
        try:
            gts = by_video.get_group(p["video-id"])
        except KeyError:
            fp[:, idx] = 1
            continue
        this = gts.reset_index()
        tiou = segment_iou(p[["t-start", "t-end"]].values, this[["t-start", "t-end"]].values)
        for t, thr in enumerate(thresholds):
            for j in tiou.argsort()[::-1]:
                if tiou[j] < thr:
                    fp[t, idx] = 1
                    break
                if lock[t, this.loc[j]["index"]] >= 0:
                    continue
                tp[t, idx] = 1
                lock[t, this.loc[j]["index"]] = idx
                break
            if fp[t, idx] == 0 and tp[t, idx] == 0:
                fp[t, idx] = 1
    tpc, fpc = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    rec, prec = tpc / npos, tpc / (tpc + fpc)
    return np.array([voc_ap(prec[t], rec[t]) for t in range(len(thresholds))])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ground_truth")
    ap.add_argument("predictions")
    ap.add_argument("--subset", default="validation")
    ap.add_argument("--official", default=os.environ.get("ANET_EVAL", ""))
    args = ap.parse_args()
    thresholds = np.linspace(0.5, 0.95, 10)
    t0 = time.time()
    if args.official:
        ed = load_official(args.official)("eval_detection")
        ev = ed.ANETdetection(args.ground_truth, args.predictions, tiou_thresholds=thresholds, subset=args.subset,
                              verbose=False, check_status=False)
        ev.evaluate()
        m, evaluator = ev.mAP, "official eval_detection.py"
    else:
        gt, pred, index = frames(args.ground_truth, args.predictions, args.subset)
        g, p = gt.groupby("label"), pred.groupby("label")
        aps = np.zeros((len(thresholds), len(index)))
        for c in index.values():
            pc = p.get_group(c).reset_index(drop=True) if c in p.groups else pd.DataFrame()
            aps[:, c] = class_ap(g.get_group(c).reset_index(drop=True), pc, thresholds)
        m, evaluator = aps.mean(axis=1), "pandas port (scripts/anet_eval_python.py)"
    seconds = time.time() - t0
    print(json.dumps({"average_mAP": float(np.mean(m)), "mAP": [float(x) for x in m], "seconds": seconds, "evaluator": evaluator}))


if __name__ == "__main__":
    main()

"""CoreInfer similarity-guided fixtures: the released cluster layout for the opt-tiny and llama-tiny models.

Run from the repository root (transformers/torch from /work/venv-torch, scikit-learn on PYTHONPATH):
    PYTHONPATH=/tmp/sk-lib /work/venv-torch/bin/python Tests/Fixtures/coreinfer-clusters/make_fixture.py

It re-implements the released selection code of wangqinsi1/CoreInfer (cluster.py, convert/convert_*_sim.py,
commit 38de332) with the released bugs fixed the way Menagerie fixes them:
  * per-cluster neuron lists start from empty statistics for every cluster (cluster.py L259/L317 create the
    `activations` list once, so cluster c pools the sentences of clusters 0..c);
  * LLaMA's online signature sorts each token's row along the neuron axis (convert_llama_model_sim.py L39 sorts
    the (1, S, d_ff) tensor along dim 1, the sequence axis);
  * ties (equal activations, equal counts) go to the lower neuron index (torch's sort/argsort are not stable);
  * texts are used as given for both architectures (cluster_opt_data's regex cleaning and 100-token truncation
    are not applied: neither the per-cluster lists nor the online prompt get them in the release).
Everything else is the released rule:
  * signal: OPT = the input of activation_fn (nn.ReLU) = fc1's pre-activation; LLaMA = the input of mlp.act_fn
    (SiLU) = gate_proj's output;
  * signature layer 25 of 32, scaled: round(25/32 * L);
  * offline signature per text: each token's top round(0.4 * #positive of that token) neurons, counted over the
    text's tokens, the top `m` counted neurons (released 3000; here m = min(3000, round(d_ff * 3000/11008)));
  * MultiLabelBinarizer(classes=range(0, W)) with W = d_ff for LLaMA and d_ff - 1 for OPT (the release's
    range(0, 16383) for OPT-6.7B's 16384 neurons); elbow KMeans k = 1..10 (random_state 42),
    k = argmax(second difference of inertia) + 2, at least 4; KMeans(k, random_state=42);
  * per cluster and layer (every layer): the members' tokens concatenated, k = int(0.4 * positives / rows) per
    token, counts, the first int(#distinct * sparsity) by count, pickled as the torch tensor slice the release
    pickles (`neuron_activation/<layer>/cluster_<c>.pkl`); kmeans.pkl, mlb_model.pkl and cluster.pkl as released;
  * online: the prompt's signature-layer signal, k = int(0.4 * positives / tokens) shared by all tokens, the top
    m counted neurons, mlb.transform (ids >= W ignored), kmeans.predict.
expected.json records every intermediate list so the Swift tests compare ours with these.
"""

import json
import os
import pickle
import shutil
import sys
import warnings

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.preprocessing import MultiLabelBinarizer
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.dirname(HERE)

TEXTS = [
    # three topics, four texts each (written here, CC0)
    "Cells divide by mitosis and copy their DNA before they split.",
    "Enzymes speed up the chemical reactions inside living cells.",
    "Proteins fold into shapes that decide what they can do.",
    "The heart pumps blood through arteries and veins.",
    "Knead the dough until it is smooth, then let it rise.",
    "Fry the onions slowly in butter until they turn golden.",
    "Simmer the soup for an hour and season it with salt.",
    "Bake the bread in a hot oven until the crust is brown.",
    "The planets move around the sun in nearly circular orbits.",
    "A telescope gathers light from distant stars and galaxies.",
    "The moon reflects sunlight and shows phases every month.",
    "Comets grow bright tails when they come close to the sun.",
]
PROMPTS = [
    "What happens to you if you eat watermelon seeds?",
    "The planets move",
    "Knead the dough",
    "Proteins are made of amino acids.",
]
SPARSITY = 0.4  # cluster.py --sparsity (kept fraction of the distinct neurons)
RATIO = 0.4  # the hard-coded 0.4 of the signatures and of value_ratio


def ranked(counts):
    """Counted neurons by count descending, ties to the lower index (a stable sort of the ascending unique)."""
    ids = np.nonzero(counts)[0]
    order = np.argsort(-counts[ids], kind="stable")
    return ids[order]


def per_token_topk(A, ks):
    """Counts of each neuron over the rows' top-k (k per row), sorted along the neuron axis, stable."""
    order = torch.sort(A, dim=1, descending=True, stable=True).indices
    counts = np.zeros(A.shape[1], dtype=np.int64)
    for i, k in enumerate(ks):
        for n in order[i, :k].tolist():
            counts[n] += 1
    return counts


def offline_signature(A, m):
    positives = (A > 0).sum(dim=1)
    ks = [int(torch.round(positives[i].double() * RATIO)) for i in range(A.shape[0])]  # cluster.py L123: torch.round
    return ranked(per_token_topk(A, ks))[:m]


def shared_k(A):
    return int(RATIO * (A > 0).sum().item() / A.shape[0])


def online_signature(A, m):
    k = shared_k(A)
    return ranked(per_token_topk(A, [k] * A.shape[0]))[:m]


def signals(model, tokenizer, text, arch, layers):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    store, check = {}, {}
    hooks = []
    for l in range(layers):
        if arch == "opt":
            mod = model.model.decoder.layers[l].activation_fn
        else:
            mod = model.model.layers[l].mlp.act_fn
            hooks.append(model.model.layers[l].mlp.gate_proj.register_forward_hook(lambda m, i, o, l=l: check.__setitem__(l, o.detach())))
        hooks.append(mod.register_forward_hook(lambda m, i, o, l=l: store.__setitem__(l, i[0].detach())))
    with torch.no_grad():
        model(ids)
    for h in hooks:
        h.remove()
    out = {}
    for l in range(layers):
        a = store[l].reshape(-1, store[l].shape[-1]).float()
        if arch == "llama":
            assert torch.equal(a, check[l].reshape(a.shape)), "act_fn input is not gate_proj's output"
        out[l] = a
    return ids[0].tolist(), out


def make(name, arch):
    folder = os.path.join(FIXTURES, name)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    L = model.config.num_hidden_layers
    dff = model.config.ffn_dim if arch == "opt" else model.config.intermediate_size
    layer = round(25 / 32 * L)
    m = min(3000, round(dff * 3000 / 11008))
    width = dff - 1 if arch == "opt" else dff
    out = os.path.join(HERE, name)
    shutil.rmtree(out, ignore_errors=True)

    texts = []
    acts = []
    for t in TEXTS:
        ids, s = signals(model, tokenizer, t, arch, L)
        acts.append(s)
        texts.append({"text": t, "input_ids": ids, "signature": offline_signature(s[layer], m).tolist()})

    mlb = MultiLabelBinarizer(classes=range(0, width))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown class d_ff-1 (OPT) is ignored, as in the release
        encoded = mlb.fit_transform([x["signature"] for x in texts])
    wcss = []
    for i in range(1, 11):
        km = KMeans(n_clusters=i, random_state=42)
        km.fit_predict(encoded)
        wcss.append(float(km.inertia_))
    k = int(np.argmax(np.diff(np.diff(wcss))) + 2)
    k = max(k, 4)
    kmeans = KMeans(n_clusters=k, random_state=42)
    labels = kmeans.fit_predict(encoded)

    os.makedirs(os.path.join(out, "cluster_activation"))
    with open(os.path.join(out, "cluster_activation", "cluster.pkl"), "wb") as f:
        pickle.dump(labels, f)
    with open(os.path.join(out, "cluster_activation", "kmeans.pkl"), "wb") as f:
        pickle.dump(kmeans, f)
    with open(os.path.join(out, "cluster_activation", "mlb_model.pkl"), "wb") as f:
        pickle.dump(mlb, f)

    lists = {}
    for c in range(k):
        members = [i for i in range(len(TEXTS)) if labels[i] == c]  # fresh for every cluster (the release pools 0..c)
        for l in range(L):
            A = torch.cat([acts[i][l] for i in members], dim=0)
            limit = shared_k(A)
            order = torch.sort(A, dim=1, descending=True, stable=True).indices[:, :limit].reshape(-1)
            unique, counts = order.unique(return_counts=True, sorted=True)
            sorted_clu = unique[torch.sort(counts, descending=True, stable=True).indices]
            remained = int(len(sorted_clu) * SPARSITY)
            kept = sorted_clu[:remained]  # a view of the ranked tensor, pickled as the release does
            os.makedirs(os.path.join(out, "neuron_activation", str(l)), exist_ok=True)
            with open(os.path.join(out, "neuron_activation", str(l), f"cluster_{c}.pkl"), "wb") as f:
                pickle.dump(kept, f)
            lists.setdefault(str(c), {})[str(l)] = kept.tolist()

    prompts = []
    for p in PROMPTS:
        ids, s = signals(model, tokenizer, p, arch, L)
        sig = online_signature(s[layer], m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vec = mlb.transform([sig.tolist()])
        c = int(kmeans.predict(vec)[0])
        d = ((kmeans.cluster_centers_ - vec) ** 2).sum(axis=1)
        prompts.append({"text": p, "input_ids": ids, "signature": sig.tolist(), "cluster": c, "distances": d.tolist()})

    expected = {
        "architecture": arch, "d_ff": dff, "layers": L, "signature_layer": layer, "signature_size": m,
        "binarizer_width": width, "signature_alpha": RATIO, "cluster_alpha": RATIO, "beta": SPARSITY,
        "inertia": wcss, "k": k, "labels": [int(x) for x in labels], "texts": texts, "cluster_neurons": lists,
        "prompts": prompts,
        "versions": {"torch": torch.__version__, "sklearn": __import__("sklearn").__version__, "numpy": np.__version__,
                     "transformers": __import__("transformers").__version__},
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print(name, "k =", k, "labels", labels.tolist(), "prompt clusters", [p["cluster"] for p in prompts], file=sys.stderr)


def make_bad():
    """Damaged inputs for the refusal tests (llama-tiny: d_ff 192), each pickled the way the release pickles."""
    out = os.path.join(HERE, "bad")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    ranked_ids = torch.tensor([5, 191, 7, 3, 0, 9])
    cases = {
        "out-of-range.pkl": torch.tensor([5, 192, 7]),  # 192 = d_ff
        "negative.pkl": torch.tensor([5, -1, 7]),
        "duplicate.pkl": torch.tensor([5, 7, 5]),
        "float.pkl": torch.tensor([5.0, 7.0]),
        "matrix.pkl": torch.tensor([[5, 7], [1, 2]]),
        "list.pkl": [5, 7, 9],  # a plain Python list: not what the release writes
        "good-view.pkl": ranked_ids[1:4],  # a view at offset 1 of a 6-element storage: [191, 7, 3]
    }
    for name, value in cases.items():
        with open(os.path.join(out, name), "wb") as f:
            pickle.dump(value, f)
    with open(os.path.join(out, "good-view-p2.pkl"), "wb") as f:  # protocol 2: bytes as _codecs.encode(str, 'latin1')
        pickle.dump(ranked_ids[1:4], f, protocol=2)
    np.save(os.path.join(out, "centroids-wrong-width.npy"), np.zeros((4, 100)))
    np.save(os.path.join(out, "centroids.npy"), np.eye(4, 192))


if __name__ == "__main__":
    torch.manual_seed(0)
    make("opt-tiny", "opt")
    make("llama-tiny", "llama")
    make_bad()

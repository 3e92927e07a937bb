#!/usr/bin/env python3
"""PyTorch side of `menagerie bench`: the same workloads, timed the same way (median of repeats
after a warm-up), printed as JSON records {name, unit, median, min, max}.

Run by `make bench-reference` inside the venv it creates (torch, timm, open_clip, grad-cam and
transformers from PyPI).
Random weights: speed does not depend on the values, and nothing is downloaded.
"""
import argparse, json, statistics, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F


def bench_images(count, side, folder):
    """The PNGs `menagerie bench` writes: value (x + 2y + 37i + 85c) mod 256 at pixel (x, y) of image i, channel c."""
    import os
    import numpy as np
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    y, x = np.mgrid[0:side, 0:side]
    for i in range(count):
        pixels = np.stack([(x + 2 * y + 37 * i + 85 * c) % 256 for c in range(3)], axis=-1).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:04d}.png"))
    return sorted(os.path.join(folder, f) for f in os.listdir(folder))


def embed_folder(model, image_size, count, batch, repeats):
    """images/s of open_clip embedding `count` 256-px PNGs through a DataLoader (one worker) at `batch`."""
    import tempfile
    import open_clip
    from PIL import Image
    folder = tempfile.mkdtemp(prefix="menagerie-ref-images-")
    files = bench_images(count, 256, folder)
    preprocess = open_clip.image_transform(image_size, is_train=False)

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, i):
            return preprocess(Image.open(files[i]).convert("RGB"))

    def run():
        loader = torch.utils.data.DataLoader(Files(), batch_size=batch, num_workers=1)
        with torch.inference_mode():
            for x in loader:
                model.encode_image(x)
    run()
    stats = timed(run, max(2, repeats // 4))
    return {"median": count / (stats["median"] / 1000), "min": count / (stats["max"] / 1000), "max": count / (stats["min"] / 1000)}


def timed(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


class ConvNet3(nn.Module):
    """ConvNet-3 of the dataset-distillation code: 3 × [conv 3×3 → instance norm → ReLU → avg pool]."""
    def __init__(self, channels=3, classes=10, width=128, depth=3, size=32):
        super().__init__()
        layers = []
        for d in range(depth):
            layers += [nn.Conv2d(channels if d == 0 else width, width, 3, padding=1),
                       nn.GroupNorm(width, width, affine=True), nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)]
            size //= 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    records = []

    def add(name, unit, stats):
        records.append({"name": name, "unit": unit, **stats})
        print(f"{name}: {stats['median']:.1f} {unit}", file=sys.stderr)

    def wanted(name):
        return not args.only or args.only in name

    if wanted("convnet3.train_step"):
        net = ConvNet3()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(256, 3, 32, 32)
        y = torch.arange(256) % 10

        def step():
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        add("convnet3.train_step", "ms", timed(step, max(2, args.repeats // 2)))

    # Dataset distillation on 3×28×28, 10 classes, IPC 10 (no augmentation on either side): one DM
    # iteration (fresh frozen ConvNet-3, 256 real + 10 synthetic per class), one DC outer step
    # (fresh ConvNet-3, per-class gradient matching with second order, one image step), one
    # evaluation epoch (an SGD step of ConvNet-3 on the 100 distilled images).
    if wanted("distill."):
        real = torch.randn(10, 256, 3, 28, 28)
        syn = torch.randn(100, 3, 28, 28, requires_grad=True)
        opt_img = torch.optim.SGD([syn], lr=1.0, momentum=0.5)

        def dm_iteration():
            net = ConvNet3(size=28)
            for p in net.parameters():
                p.requires_grad = False
            loss = 0
            for c in range(10):
                r = net.features(real[c]).flatten(1).mean(0)
                s_ = net.features(syn[c * 10:(c + 1) * 10]).flatten(1).mean(0)
                loss = loss + ((r - s_) ** 2).sum()
            opt_img.zero_grad()
            loss.backward()
            opt_img.step()
        add("distill.dm_iteration", "ms", timed(dm_iteration, 3))

        opt_dc = torch.optim.SGD([syn], lr=0.1, momentum=0.5)

        def dc_step():
            net = ConvNet3(size=28)
            params = list(net.parameters())
            loss = 0
            for c in range(10):
                gr = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real[c]), torch.full((256,), c)), params)]
                gs = torch.autograd.grad(F.cross_entropy(net(syn[c * 10:(c + 1) * 10]), torch.full((10,), c)), params, create_graph=True)
                for a, b in zip(gr, gs):
                    if a.dim() == 1:
                        continue
                    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
                    loss = loss + torch.sum(1 - torch.sum(a * b, -1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6))
            opt_dc.zero_grad()
            loss.backward()
            opt_dc.step()
        add("distill.dc_outer_step", "ms", timed(dc_step, 3))

        net = ConvNet3(size=28)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        x100, y100 = torch.randn(100, 3, 28, 28), torch.arange(100) % 10

        def eval_epoch():
            opt.zero_grad()
            F.cross_entropy(net(x100), y100).backward()
            opt.step()
        add("distill.eval_epoch", "ms", timed(eval_epoch, 10))

    with torch.inference_mode():
        if wanted("vit_b16.forward"):
            import timm
            vit = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
            image = torch.full((1, 3, 224, 224), 0.5)
            add("vit_b16.forward", "ms", timed(lambda: vit(image), args.repeats))
            image8 = torch.full((8, 3, 224, 224), 0.5)
            add("vit_b16.forward_batch8", "ms", timed(lambda: vit(image8), max(2, args.repeats // 4)))
            # PyTorch's CPU bf16: autocast runs the linear layers in bfloat16 (oneDNN underneath).
            with torch.autocast("cpu", dtype=torch.bfloat16):
                add("vit_b16.forward_bf16", "ms", timed(lambda: vit(image), args.repeats))
                add("vit_b16.forward_batch8_bf16", "ms", timed(lambda: vit(image8), max(2, args.repeats // 4)))
            del vit
        if wanted("vit_l14"):
            import open_clip
            model = open_clip.create_model("ViT-L-14", pretrained=None).eval()
            image = torch.full((1, 3, 224, 224), 0.5)
            add("vit_l14.image_forward", "ms", timed(lambda: model.encode_image(image), max(2, args.repeats // 2)))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                add("vit_l14.image_forward_bf16", "ms", timed(lambda: model.encode_image(image), max(2, args.repeats // 2)))
            tokens = torch.randint(1, 49000, (8, 77))
            add("vit_l14.text_forward_batch8", "ms", timed(lambda: model.encode_text(tokens), max(2, args.repeats // 2)))
    if wanted("cam.") or wanted("vit_b16.gradcam") or wanted("vit_b16.finercam"):
        # pytorch-grad-cam on a timm ViT-B/16 classifier (target layer blocks[-1].norm1, CLS dropped).
        import timm
        from pytorch_grad_cam import GradCAM, FinerCAM
        vit = timm.create_model("vit_base_patch16_224", pretrained=False).eval()

        def reshape(t, h=14, w=14):
            return t[:, 1:, :].reshape(t.size(0), h, w, t.size(2)).transpose(2, 3).transpose(1, 2)

        image = torch.full((1, 3, 224, 224), 0.5)
        grad = GradCAM(model=vit, target_layers=[vit.blocks[-1].norm1], reshape_transform=reshape)
        add("vit_b16.gradcam", "ms", timed(lambda: grad(input_tensor=image, targets=None), max(3, args.repeats // 2)))
        finer = FinerCAM(model=vit, target_layers=[vit.blocks[-1].norm1], reshape_transform=reshape)
        add("vit_b16.finercam", "ms", timed(lambda: finer(input_tensor=image, targets=None), max(3, args.repeats // 2)))

    if wanted("prompt_cam.train"):
        # Prompt-CAM (VPT-Deep) training on the embedded backbone's shape: ViT 64×64, patch 8, width 96,
        # depth 4, 3 heads, 64 class prompts per layer; backbone frozen, prompts + shared head trained
        # with SGD (momentum 0.9); one epoch = 128 images in batches of 16 (as `menagerie bench`).
        import timm
        vit = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=64, patch_size=8, embed_dim=96, depth=4,
                                num_heads=3, num_classes=0).eval()
        for p in vit.parameters():
            p.requires_grad_(False)
        classes = 64
        prompts = nn.Parameter(torch.empty(4, classes, 96).uniform_(-0.1, 0.1))
        head = nn.Linear(96, 1)
        opt = torch.optim.SGD([prompts, *head.parameters()], lr=0.05, momentum=0.9)

        def forward(x):
            n = x.size(0)
            x = vit._pos_embed(vit.patch_embed(x))
            for l, block in enumerate(vit.blocks):
                out = block(torch.cat([prompts[l].expand(n, -1, -1), x], dim=1))
                x = out[:, classes:]
            return head(vit.norm(out[:, :classes])).squeeze(-1)

        images = torch.rand(128, 3, 64, 64)
        labels = torch.arange(128) % classes

        def epoch():
            for b in range(0, 128, 16):
                opt.zero_grad()
                F.cross_entropy(forward(images[b:b + 16]), labels[b:b + 16]).backward()
                opt.step()
        stats = timed(epoch, max(2, args.repeats // 5))
        add("prompt_cam.train", "images/s", {"median": 128 / (stats["median"] / 1000), "min": 128 / (stats["max"] / 1000),
                                             "max": 128 / (stats["min"] / 1000)})

    if any(wanted(n) for n in ("bioclip2.text_embed", "bioclip2.predict_10k_cached", "bioclip2.embed_folder")):
        # The embedded BioCLIP-style model loaded by open_clip itself (the plugin writes open_clip's
        # layout): text-embedding throughput under the 80 templates, and predict for 100 images against
        # 10,000 custom labels whose embeddings are already computed (the cached path).
        import os, open_clip
        from safetensors.torch import load_file
        folder = os.path.join(os.path.dirname(__file__), "..", "Plugins", "BioCLIP2", "Resources", "bioclip2-tol-tiny")
        cfg = json.load(open(os.path.join(folder, "open_clip_config.json")))["model_cfg"]
        model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                               quick_gelu=cfg.get("quick_gelu", False)).eval()
        model.load_state_dict(load_file(os.path.join(folder, "open_clip_model.safetensors")))
        tokenizer = open_clip.get_tokenizer("ViT-B-32")
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
        labels = [f"Genus{i // 10} species{i}" for i in range(100)]
        texts = [t(c) for c in labels for t in OPENAI_IMAGENET_TEMPLATES]
        with torch.inference_mode():
            def embed_texts():
                for b in range(0, len(texts), 256):
                    model.encode_text(tokenizer(texts[b:b + 256]))
            stats = timed(embed_texts, 2)
            add("bioclip2.text_embed", "texts/s", {"median": len(texts) / (stats["median"] / 1000), "min": len(texts) / (stats["max"] / 1000),
                                                  "max": len(texts) / (stats["min"] / 1000)})
            size = cfg["vision_cfg"]["image_size"]
            images = torch.rand(100, 3, size, size)
            classes = torch.nn.functional.normalize(torch.randn(10000, cfg["embed_dim"]), dim=-1)

            def predict():
                for b in range(0, 100, 10):
                    f = torch.nn.functional.normalize(model.encode_image(images[b:b + 10]), dim=-1)
                    (model.logit_scale.exp() * f @ classes.T).softmax(dim=-1).topk(5)
            add("bioclip2.predict_10k_cached", "ms", timed(predict, max(2, args.repeats // 5)))
        # Embedding a folder of PNGs as open_clip users do: a DataLoader with one worker process
        # decoding and transforming (open_clip's own preprocessing) while the model runs, batch 32.
        if wanted("bioclip2.embed_folder"):
            add("bioclip2.embed_folder", "images/s", embed_folder(model, cfg["vision_cfg"]["image_size"], 512, 32, args.repeats))

    if wanted("vit_l14.embed_folder"):
        import open_clip
        model = open_clip.create_model("ViT-L-14", pretrained=None).eval()
        add("vit_l14.embed_folder", "images/s", embed_folder(model, 224, 16, 8, args.repeats))

    if wanted("coreinfer."):
        # Hugging Face transformers' LlamaForCausalLM of the shape `menagerie bench` builds (hidden 1024,
        # 12 layers, 16 heads over 4 KV heads, SwiGLU 2816, vocabulary 32,000; random weights): greedy
        # decode tokens/s after a 32-token prompt, with its KV cache.
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16,
                          num_key_value_heads=4, head_dim=64, max_position_embeddings=512, vocab_size=32000,
                          tie_word_embeddings=False, rms_norm_eps=1e-5)
        llama = LlamaForCausalLM(cfg).eval()
        prompt = torch.tensor([[(i * 997) % 32000 for i in range(32)]])
        with torch.inference_mode():
            def generate():
                llama.generate(prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False)
            stats = timed(generate, max(2, args.repeats // 5))
            # Prefill is included in generate(); subtract its measured time for decode only.
            prefill = timed(lambda: llama(prompt), max(2, args.repeats // 5))
            decode_ms = {k: stats[k] - prefill["median"] for k in ("median", "min", "max")}
            add("coreinfer.dense_decode", "tokens/s", {"median": 32 / (decode_ms["median"] / 1000), "min": 32 / (decode_ms["max"] / 1000),
                                                       "max": 32 / (decode_ms["min"] / 1000)})

    if wanted("load.pt."):
        # open_clip ViT-L/14's state dict (427.6 M float32, 1.71 GB) saved by torch, loaded with
        # mmap=True, weights_only=True (the names and shapes of Plugins/BioCLIP2/Benchmarks.swift, warm page cache).
        import os, tempfile
        shapes = {"positional_embedding": [77, 768], "text_projection": [768, 768], "logit_scale": [],
                  "visual.class_embedding": [1024], "visual.positional_embedding": [257, 1024], "visual.proj": [1024, 768],
                  "visual.conv1.weight": [1024, 3, 14, 14]}
        for n, w in (("visual.ln_pre", 1024), ("visual.ln_post", 1024), ("ln_final", 768)):
            shapes[n + ".weight"] = [w]; shapes[n + ".bias"] = [w]
        def block(p, w):
            for n in ("ln_1", "ln_2"):
                shapes[p + n + ".weight"] = [w]; shapes[p + n + ".bias"] = [w]
            shapes.update({p + "attn.in_proj_weight": [3 * w, w], p + "attn.in_proj_bias": [3 * w], p + "attn.out_proj.weight": [w, w],
                           p + "attn.out_proj.bias": [w], p + "mlp.c_fc.weight": [4 * w, w], p + "mlp.c_fc.bias": [4 * w],
                           p + "mlp.c_proj.weight": [w, 4 * w], p + "mlp.c_proj.bias": [w]})
        for l in range(24):
            block(f"visual.transformer.resblocks.{l}.", 1024)
        shapes["token_embedding.weight"] = [49408, 768]
        for l in range(12):
            block(f"transformer.resblocks.{l}.", 768)
        path = os.path.join(tempfile.gettempdir(), f"menagerie-bench-ref-vit-l14-{os.getpid()}.pt")
        torch.save({k: torch.randn(v) * 0.02 for k, v in shapes.items()}, path)
        try:
            load = lambda: torch.load(path, mmap=True, weights_only=True)
            reps = max(3, args.repeats // 4)
            add("load.pt.open", "ms", timed(load, reps))
            add("load.pt.first_tensor", "ms", timed(lambda: next(iter(load().values())).sum(), reps))
            add("load.pt.all_tensors", "ms", timed(lambda: [t.sum() for t in load().values()], reps))
        finally:
            os.unlink(path)

    if wanted("sam2.track_frame_1024"):
        # sam2 1.1.0's video predictor, SAM 2.1 Hiera-tiny (sam2.1_hiera_t.yaml) with random weights at
        # 1024 px: the time of each tracked frame of propagate_in_video (frames 1…, image encoder
        # included), as Plugins/SAM2/Benchmarks.swift times the Swift tracker. Frames: random noise.
        import os, tempfile
        import numpy as np
        from PIL import Image
        from hydra import initialize_config_module, compose
        from hydra.core.global_hydra import GlobalHydra
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
        GlobalHydra.instance().clear()
        initialize_config_module("sam2", version_base="1.2")
        cfg = compose(config_name="configs/sam2.1/sam2.1_hiera_t.yaml",
                      overrides=["++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor", "++model.fill_hole_area=0"])
        OmegaConf.resolve(cfg)
        sam = instantiate(cfg.model, _recursive_=True).eval()
        frames = max(4, min(args.repeats // 4, 8))
        with tempfile.TemporaryDirectory() as d:
            rng = np.random.default_rng(2)
            for i in range(frames):
                Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)).save(os.path.join(d, f"{i:05d}.jpg"))
            mask = np.zeros((1024, 1024), bool)
            mask[257:511, 257:511] = True
            with torch.inference_mode():
                state = sam.init_state(video_path=d)
                sam.add_new_mask(state, frame_idx=0, obj_id=1, mask=torch.from_numpy(mask))
                times, last = [], None
                for fi, _, _ in sam.propagate_in_video(state):
                    now = time.perf_counter()
                    if last is not None and fi > 0:
                        times.append((now - last) * 1000)
                    last = now
        times = sorted(times)
        add("sam2.track_frame_1024", "ms", {"median": times[len(times) // 2], "min": times[0], "max": times[-1]})

    if wanted("dit.xl2_cfg_step_256") or wanted("vae.decode_256"):
        # diffusers 0.42 (make bench-reference installs it): DiT-XL/2 at 256 px and the SD VAE with random
        # weights, as Plugins/LatentDiffusion/Benchmarks.swift times the Swift ones: one CFG denoiser step
        # (DiTPipeline's batch [cond, null] of one latent, scale 4 on all channels, then DDIMScheduler.step)
        # and one VAE decode of a 4×32×32 latent.
        from diffusers import DiTTransformer2DModel, AutoencoderKL, DDIMScheduler
        reps = max(3, min(args.repeats, 10))
        if wanted("dit.xl2_cfg_step_256"):
            tr = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=28,
                                       sample_size=32, patch_size=2, num_embeds_ada_norm=1000).eval()
            sched = DDIMScheduler(clip_sample=False)
            sched.set_timesteps(50)
            lat = torch.randn(1, 4, 32, 32); t = sched.timesteps[25]; y = torch.tensor([207, 1000])

            def cfg_step():
                with torch.no_grad():
                    e = tr(torch.cat([lat, lat]), timestep=t.repeat(2), class_labels=y).sample[:, :4]
                    ec, eu = e.chunk(2)
                    sched.step(eu + 4.0 * (ec - eu), t, lat)
            add("dit.xl2_cfg_step_256", "ms", timed(cfg_step, reps))
            del tr
        if wanted("vae.decode_256"):
            vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                latent_channels=4, norm_num_groups=32, sample_size=256).eval()
            z = torch.randn(1, 4, 32, 32)

            def decode():
                with torch.no_grad():
                    vae.decode(z)
            add("vae.decode_256", "ms", timed(decode, reps))

    json.dump({"torch": torch.__version__, "threads": args.threads, "records": records}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()

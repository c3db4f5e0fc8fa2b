"""Written once at commit bf94e22 (before issue 11's refactor) to freeze the old checkpoint format."""
import json, torch
from temde.checkpoint import save_model, build_model
torch.manual_seed(0)
out = "tests/data/legacy_ckpt"
cases = {
 "sgr_temde": {"_target_": "temde.models.sgraf.SGRAF", "vocab_size": 20, "img_dim": 12, "word_dim": 8, "embed_size": 16,
   "sim_dim": 8, "module_name": "SGR", "sgr_step": 2, "num_region": 6, "global_encoder": "temde",
   "temde": {"depth": 2, "hyperplanes": 3, "tau": 1.0, "learn_tau": False, "trainable": True, "bias_init": "median",
             "normalize": "l2", "assignment": "bits", "init_scale": 3.0, "shared": True},
   "global_encoder_kwargs": {}},
 "saf_sa": {"_target_": "temde.models.sgraf.SGRAF", "vocab_size": 20, "img_dim": 12, "word_dim": 8, "embed_size": 16,
   "sim_dim": 8, "module_name": "SAF", "sgr_step": 2, "num_region": 6, "global_encoder": "sa",
   "temde": {"depth": 8, "hyperplanes": 7, "tau": 1.0, "learn_tau": False, "trainable": True, "bias_init": "median",
             "normalize": "l2", "assignment": "bits", "init_scale": 3.0, "shared": True},
   "global_encoder_kwargs": {}},
 "vsrn_gcn": {"_target_": "temde.models.vsrn.VSRN", "vocab_size": 20, "img_dim": 12, "embed_size": 16, "word_dim": 8,
   "variant": "f30k", "num_gcn_blocks": 2, "global_encoder": "gcn", "temde_mode": "additive",
   "temde": {"depth": 8, "hyperplanes": 7, "shared": True}, "temde_weight": 1.0, "learn_temde_weight": False,
   "caption_branch": True, "max_len": 10, "dim_hidden": 8, "dim_word": 8},
 "vsrn_temde_additive": {"_target_": "temde.models.vsrn.VSRN", "vocab_size": 20, "img_dim": 12, "embed_size": 16, "word_dim": 8,
   "variant": "coco", "num_gcn_blocks": 2, "global_encoder": "temde", "temde_mode": "additive",
   "temde": {"depth": 2, "hyperplanes": 3, "shared": False}, "temde_weight": 0.5, "learn_temde_weight": True,
   "caption_branch": False},
 "vsrn_temde_replace": {"_target_": "temde.models.vsrn.VSRN", "vocab_size": 20, "img_dim": 12, "embed_size": 16, "word_dim": 8,
   "variant": "f30k", "num_gcn_blocks": 2, "global_encoder": "temde", "temde_mode": "replace",
   "temde": {"depth": 2, "hyperplanes": 3, "shared": True}, "caption_branch": False},
 "sgr_mean": {"_target_": "temde.models.sgraf.SGRAF", "vocab_size": 20, "img_dim": 12, "word_dim": 8, "embed_size": 16,
   "sim_dim": 8, "module_name": "SGR", "sgr_step": 2, "num_region": 6, "global_encoder": "mhsa",
   "temde": {"depth": 8, "hyperplanes": 7, "shared": True},
   "global_encoder_kwargs": {"heads": 2, "ffn_mult": 1}},
}
g = torch.Generator().manual_seed(1)
images = torch.randn(3, 6, 12, generator=g)
tokens = torch.randint(1, 20, (4, 7), generator=g)
lengths = torch.tensor([7, 5, 3, 2])
inputs = {"images": images, "tokens": tokens, "lengths": lengths}
torch.save(inputs, f"{out}/inputs.pt")
for name, cfg in cases.items():
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with torch.no_grad():  # one train-mode forward: data-inits the sketches and moves BatchNorm stats
        model.encode_images(images + 0.1); model.encode_texts(tokens, lengths)
    model.eval()
    with torch.no_grad():
        sims = model.similarity(model.encode_images(images), model.encode_texts(tokens, lengths))
    save_model(f"{out}/{name}.pt", model, cfg, word2idx={f"w{i}": i for i in range(20)}, meta={"written_by": "bf94e22"})
    torch.save({"similarity": sims}, f"{out}/{name}.expected.pt")
    print(name, sims.shape, sims[0, :2].tolist())

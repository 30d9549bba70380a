"""The model: config presets (config), the shipped tokenizer and text <-> ids (tokenizer), model construction and
init (model), the exported `from_pretrained` folder and its reading (hf_folder, model_folder, checkpoint_series),
conversions (nanogpt, llmc, convert) and TransformerLens (interp); FLOPs per token (flops).

Imports only `gpt2_owt.core` below it, no training or evaluation logic. Import names from their module
(`from gpt2_owt.modeling.tokenizer import load_tokenizer`): the package itself loads nothing, so torch-free modules
(tokenizer, flops, hf_folder's file names, model_folder, checkpoint_series) stay torch-free.
"""

"""A prompt saved here works in PEFT's own `PeftModel`, and PEFT's prompts load here."""

from __future__ import annotations

import numpy as np
import peft
import pytest
import torch
import transformers

from prompt_jax.prompts.files import PromptFormatError, load_prompt, save_prompt


def _tiny(kind: str):
    torch.manual_seed(0)
    if kind == "llama":
        config = transformers.LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
        return transformers.LlamaForCausalLM(config).eval()
    config = transformers.T5Config(
        vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
        num_heads=2, decoder_start_token_id=0, dropout_rate=0.0)
    return transformers.T5ForConditionalGeneration(config).eval()


def _prompt(length=5, width=16):
    return np.random.default_rng(1).standard_normal((length, width)).astype(np.float32)


@pytest.mark.parametrize("kind,task_type,peft_class", [
    ("llama", "CAUSAL_LM", peft.PeftModelForCausalLM),
    ("t5", "SEQ_2_SEQ_LM", peft.PeftModelForSeq2SeqLM),
])
def test_saved_adapter_loads_in_peft_and_prepends_our_prompt(tmp_path, kind, task_type,
                                                             peft_class):
    prompt = _prompt()
    save_prompt(prompt, tmp_path / "adapter", format="peft",
                metadata={"task_type": task_type, "base_model_name_or_path": f"tiny-{kind}"})
    model = _tiny(kind)
    peft_model = peft.PeftModel.from_pretrained(model, tmp_path / "adapter")
    assert type(peft_model) is peft_class
    np.testing.assert_array_equal(peft_model.get_prompt_embedding_to_save("default").numpy(),
                                  prompt)

    # PEFT's forward equals the base model fed [prompt; token embeddings] by hand.
    ids = torch.tensor([[3, 4, 5, 6]])
    embeds = torch.cat([torch.from_numpy(prompt)[None], model.get_input_embeddings()(ids)], 1)
    with torch.no_grad():
        if kind == "llama":
            ours = peft_model(input_ids=ids).logits
            reference = model(inputs_embeds=embeds).logits
        else:
            labels = torch.tensor([[7, 8]])
            ours = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids),
                              labels=labels).logits
            reference = model(inputs_embeds=embeds, labels=labels).logits
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_peft_trained_adapter_loads_here(tmp_path):
    peft_model = peft.get_peft_model(_tiny("llama"), peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=7))
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.normal_()
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = load_prompt(tmp_path / "adapter")
    assert loaded.format == "peft"
    assert loaded.metadata["task_type"] == "CAUSAL_LM"
    np.testing.assert_array_equal(loaded.array,
                                  peft_model.get_prompt_embedding_to_save("default").numpy())
    # The same file, named directly.
    np.testing.assert_array_equal(load_prompt(tmp_path / "adapter" /
                                              "adapter_model.safetensors").array, loaded.array)


def test_peft_seq2seq_adapter_with_decoder_prompt_needs_a_choice(tmp_path):
    peft_model = peft.get_peft_model(_tiny("t5"), peft.PromptTuningConfig(
        task_type="SEQ_2_SEQ_LM", num_virtual_tokens=4))  # PEFT's default: 2 submodules
    peft_model.save_pretrained(tmp_path / "adapter")
    both = peft_model.get_prompt_embedding_to_save("default").numpy()
    assert both.shape == (8, 16)
    with pytest.raises(PromptFormatError, match=r"num_transformer_submodules=2: it holds an "
                                                r"encoder and a decoder prompt; pick one with "
                                                r".*adapter::encoder"):
        load_prompt(tmp_path / "adapter")
    np.testing.assert_array_equal(load_prompt(f"{tmp_path / 'adapter'}::encoder").array,
                                  both[:4])
    np.testing.assert_array_equal(load_prompt(f"{tmp_path / 'adapter'}::decoder").array,
                                  both[4:])

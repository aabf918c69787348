#!/usr/bin/env python3
"""Writes tests/fixtures/chat/: chat templates rendered and tokenized by Transformers, for moetune's C++ tests.

Run with transformers 5.17 and tokenizers 0.23.3, plus sentencepiece and protobuf (without protobuf Transformers cannot
read the tokenizer.model folders); no downloads:

    python3 -m venv /tmp/hf5chat
    /tmp/hf5chat/bin/pip install transformers==5.17.0 tokenizers==0.23.3 sentencepiece protobuf jinja2
    /tmp/hf5chat/bin/python tools/dataset/make_chat_fixtures.py

For each supported family it makes tests/fixtures/chat/<family>/ from a small trained tokenizer of
tests/fixtures/tokenizer/ (tokenizer.json copied as is) and a tokenizer_config.json carrying the family's chat template
(the models' own templates, written out below; Qwen3's is stored as chat_template.jinja, the file Transformers prefers)
and special tokens. tokenizer_class is PreTrainedTokenizerFast so that Transformers tokenizes with tokenizer.json exactly
(transformers 5's LlamaTokenizer rebuilds the SentencePiece pre-tokenizer from its `legacy` flag instead).

Three more families use a tokenizer.model of tests/fixtures/tokenizer/ (SPM_FAMILIES) with files that leave the
template's bos/eos tokens to Transformers' defaults or to special_tokens_map.json.

expected.json holds Transformers' special_tokens_map (the special-token variables the template sees) and, per
conversation: the rendered text of apply_chat_template, its input_ids, and (conversations
without a generation prompt) the assistant mask Transformers returns for `training_template.jinja`, a copy of the
family's template with {% generation %} blocks around what the assistant generates (its content and its end-of-turn
token). The script checks that the training template renders exactly the same text as the model's template, so the mask
belongs to the text. Conversations the template refuses (raise_exception) record the error instead.

jinja_cases.json: small templates rendered by Transformers' own Jinja environment (trim_blocks, lstrip_blocks, its
tojson and raise_exception), with the output or the fact that rendering fails; and whole templates of other families
(Qwen2.5 and Mistral-7B-Instruct-v0.3, with tools and tool calls).

special_tokens.json: folders of the tokenizer fixtures with other tokenizer_config.json / config.json /
special_tokens_map.json / tokenizer.json padding (SPECIAL_TOKEN_VARIANTS), with Transformers' class, special_tokens_map
and the rendering of a template that prints every special-token variable.
"""
import json
import os
import shutil
import sys
import tempfile

from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZERS = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat")

# --- the families' templates ------------------------------------------------------------------------------------------

# Qwen2-MoE chat models (Qwen1.5-MoE-A2.7B-Chat, Qwen2-57B-A14B-Instruct).
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN2_TRAINING = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Qwen3 / Qwen3-MoE (Qwen3-30B-A3B): reasoning in <think>, stripped from turns before the last user query.
QWEN3_HEAD = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
"""
QWEN3_ASSISTANT = r"""        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
"""
QWEN3_ASSISTANT_TRAINING = r"""        {{- '<|im_start|>' + message.role + '\n' }}
        {%- generation %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- content }}
            {%- endif %}
        {%- else %}
            {{- content }}
        {%- endif %}
"""
QWEN3_TOOL_CALLS = r"""        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
"""
QWEN3_END_OF_TURN = r"""        {{- '<|im_end|>\n' }}
"""
QWEN3_END_OF_TURN_TRAINING = r"""        {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
"""
QWEN3_TAIL = r"""    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""
QWEN3 = QWEN3_HEAD + QWEN3_ASSISTANT + QWEN3_TOOL_CALLS + QWEN3_END_OF_TURN + QWEN3_TAIL
QWEN3_TRAINING = QWEN3_HEAD + QWEN3_ASSISTANT_TRAINING + QWEN3_TOOL_CALLS + QWEN3_END_OF_TURN_TRAINING + QWEN3_TAIL

# Mixtral-8x7B-Instruct-v0.1.
MIXTRAL = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""
MIXTRAL_TRAINING = MIXTRAL.replace(
    "        {{- ' ' + message['content'] + eos_token}}\n",
    "        {%- generation %}{{- ' ' + message['content'] + eos_token}}{%- endgeneration %}\n")

# Llama-2-chat (the [INST] / <<SYS>> template of meta-llama/Llama-2-*-chat-hf).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
LLAMA2_TRAINING = LLAMA2.replace(
    "{{ ' '  + content.strip() + ' ' + eos_token }}",
    "{% generation %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endgeneration %}")

# OLMoE-1B-7B-0924-Instruct (the Tulu template).
OLMOE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|system|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\\n'  + message['content'] + eos_token + '\\n' }}"
    "{% else %}{{ '<|assistant|>\\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"
)
OLMOE_TRAINING = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|system|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\\n' + message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% if not loop.last %}{{ '\\n' }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}{% endfor %}"
)

FAMILIES = {
    "qwen2": dict(tokenizer="qwen2_bytelevel", template=QWEN2, training=QWEN2_TRAINING,
                  special={"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen3": dict(tokenizer="qwen2_bytelevel", template=QWEN3, training=QWEN3_TRAINING, template_file=True,
                  special={"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "mixtral": dict(tokenizer="mixtral_spm", template=MIXTRAL, training=MIXTRAL_TRAINING,
                    special={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    "llama2": dict(tokenizer="llama_metaspace", template=LLAMA2, training=LLAMA2_TRAINING,
                   special={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    "olmoe": dict(tokenizer="olmoe_bytelevel", template=OLMOE, training=OLMOE_TRAINING,
                  special={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|padding|>"}),
}

# tokenizer.model folders whose files do not name the tokens the template writes: Transformers takes them from the
# tokenizer class's defaults, the model's own pieces, or special_tokens_map.json (src/tokenizer/special_tokens.h).
# `files`: tokenizer_config.json (the template is added), config.json, special_tokens_map.json (None: no such file).
SPM_FAMILIES = {
    # LlamaTokenizer's defaults: bos "<s>", eos "</s>" (no bos_token / eos_token in tokenizer_config.json).
    "mixtral_spm_defaults": dict(
        tokenizer="spm_bpe", template=MIXTRAL, training=MIXTRAL_TRAINING,
        files=({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": True}, None, None)),
    # The generic conversion (config.json model_type mixtral): the model's pieces; this unigram model has no BOS, so
    # bos_token is not set and {{ bos_token }} writes nothing; eos_token is its piece "</s>".
    "mixtral_unigram_pieces": dict(
        tokenizer="spm_unigram", template=MIXTRAL, training=MIXTRAL_TRAINING,
        files=({"tokenizer_class": "LlamaTokenizer"},
               {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 1000}, None)),
    # special_tokens_map.json replaces tokenizer_config.json's bos_token / eos_token (it has no added_tokens_decoder).
    "llama2_special_tokens_map": dict(
        tokenizer="spm_bpe", template=LLAMA2, training=LLAMA2_TRAINING,
        files=({"tokenizer_class": "LlamaTokenizer", "legacy": False, "bos_token": "<unk>", "eos_token": "<unk>"},
               None,
               {"bos_token": "<s>",
                "eos_token": {"content": "</s>", "lstrip": False, "rstrip": False, "normalized": False,
                              "single_word": False}})),
}

# --- conversations ----------------------------------------------------------------------------------------------------

U1 = {"role": "user", "content": "What is 2+2?"}
A1 = {"role": "assistant", "content": "It is 4."}
U2 = {"role": "user", "content": "And 3 + 3, in words?"}
A2 = {"role": "assistant", "content": "Six.\nThat is all."}
SYSTEM = {"role": "system", "content": "You are terse. Answer in one line."}
UNICODE_U = {"role": "user", "content": "Grüße aus Köln! 日本語で答えて 🙂"}
UNICODE_A = {"role": "assistant", "content": "  Hallo — こんにちは.\n\nZweite Zeile  "}

COMMON = [
    ("single_turn", [U1, A1], {}),
    ("system_prompt", [SYSTEM, U1, A1], {}),
    ("multi_turn", [U1, A1, U2, A2], {}),
    ("multi_turn_system", [SYSTEM, U1, A1, U2, A2], {}),
    ("unicode_and_whitespace", [UNICODE_U, UNICODE_A], {}),
    ("generation_prompt", [SYSTEM, U1], {"add_generation_prompt": True}),
    ("generation_prompt_after_turns", [U1, A1, U2], {"add_generation_prompt": True}),
]

TOOLS = [{"type": "function", "function": {"name": "add", "description": "Adds two integers.",
                                            "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                                                            "b": {"type": "integer"}},
                                                           "required": ["a", "b"]}}}]

SPECIFIC = {
    "qwen3": [
        ("think_in_last_turn", [U1, {"role": "assistant", "content": "<think>\nTwo plus two.\n</think>\n\nIt is 4."}], {}),
        ("think_in_every_turn", [U1, {"role": "assistant", "content": "<think>\nr1\n</think>\n\nFour."}, U2,
                                 {"role": "assistant", "content": "<think>\nr2\n</think>\n\nSix."}], {}),
        ("reasoning_content_field", [U1, {"role": "assistant", "content": "Four.", "reasoning_content": "2+2=4"}], {}),
        ("thinking_disabled_prompt", [U1], {"add_generation_prompt": True, "enable_thinking": False}),
        ("system_in_the_middle", [U1, A1, {"role": "system", "content": "Now be verbose."}, U2, A2], {}),
        ("tool_call", [SYSTEM, U1, {"role": "assistant", "content": "",
                                    "tool_calls": [{"type": "function",
                                                    "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
                       {"role": "tool", "content": "4"}, {"role": "assistant", "content": "It is 4."}],
         {"tools": TOOLS}),
    ],
    "mixtral": [
        ("roles_must_alternate", [U1, U2], {}),
        ("unknown_role", [U1, {"role": "tool", "content": "x"}], {}),
    ],
    "llama2": [
        ("roles_must_alternate", [U1, U2], {}),
    ],
}


def special_token_config(base, special):
    config = dict(base)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        config.pop(key, None)
    for key, value in special.items():
        config[key] = value
    return config


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_family(name, family):
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    source = os.path.join(TOKENIZERS, family["tokenizer"])
    if "files" in family:  # a tokenizer.model folder
        shutil.copyfile(os.path.join(source, "tokenizer.model"), os.path.join(folder, "tokenizer.model"))
        config, model_config, token_map = family["files"]
        config = dict(config)
        if model_config is not None:
            write_json(os.path.join(folder, "config.json"), model_config)
        if token_map is not None:
            write_json(os.path.join(folder, "special_tokens_map.json"), token_map)
    else:
        shutil.copyfile(os.path.join(source, "tokenizer.json"), os.path.join(folder, "tokenizer.json"))
        with open(os.path.join(source, "tokenizer_config.json"), encoding="utf-8") as f:
            config = special_token_config(json.load(f), family["special"])
    if family.get("template_file"):
        with open(os.path.join(folder, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(family["template"])
    else:
        config["chat_template"] = family["template"]
    write_json(os.path.join(folder, "tokenizer_config.json"), config)
    with open(os.path.join(folder, "training_template.jinja"), "w", encoding="utf-8") as f:
        f.write(family["training"])

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == family["template"], name
    cases = []
    for case_name, messages, options in COMMON + SPECIFIC.get(name, []):
        options = dict(options)
        generation = options.pop("add_generation_prompt", False)
        tools = options.pop("tools", None)
        case = {"name": case_name, "messages": messages, "add_generation_prompt": generation}
        if tools is not None:
            case["tools"] = tools
        if options:
            case["kwargs"] = options
        try:
            text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                 add_generation_prompt=generation, **options)
        except Exception as error:  # the template refuses the conversation
            case["error"] = f"{type(error).__name__}: {error}"
            cases.append(case)
            continue
        encoded = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                                add_generation_prompt=generation, **options)
        case["text"] = text
        case["input_ids"] = list(encoded["input_ids"])
        if not generation:
            training_text = tokenizer.apply_chat_template(messages, tools=tools, chat_template=family["training"],
                                                          tokenize=False, **options)
            if training_text != text:
                sys.exit(f"{name}/{case_name}: the training template renders differently:\n{training_text!r}\n{text!r}")
            masked = tokenizer.apply_chat_template(messages, tools=tools, chat_template=family["training"],
                                                   tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                                   **options)
            assert list(masked["input_ids"]) == case["input_ids"]
            case["assistant_masks"] = list(masked["assistant_masks"])
            assert any(case["assistant_masks"]), f"{name}/{case_name}: empty mask"
        cases.append(case)
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"family": name, "tokenizer_fixture": family["tokenizer"],
                   "special_tokens": list(tokenizer.special_tokens_map.items()), "cases": cases}, f, indent=1,
                  ensure_ascii=False)
        f.write("\n")
    print(f"{name}: {len(cases)} conversations, special tokens {tokenizer.special_tokens_map}")


# --- Jinja conformance ------------------------------------------------------------------------------------------------

JINJA_CASES = [
    # whitespace control, trim_blocks, lstrip_blocks
    ("  {% if true %}\n  x\n  {% endif %}\n  y  \n", {}),
    ("a {#- c -#} b\n{# c #}\nd", {}),
    ("a  {{- 'b' -}}  c", {}),
    ("{% for i in [1, 2] %}\n    {{ i }}\n{% endfor %}\n", {}),
    ("{% for i in [1, 2] -%}\n    {{ i }}\n{%- endfor %}", {}),
    ("x\n    {%+ if true %}y{% endif +%}\nz", {}),
    ("line\r\nnext\rlast\n\n", {}),
    ("{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("\t {% set x = 1 %}\n{{ x }}", {}),
    # literals, output of values
    ("{{ [1, 'a', None, True, 1.5, {'k': \"it's\"}] }}", {}),
    ("{{ 1e-5 }} {{ 1.0 }} {{ 10/4 }} {{ 7//2 }} {{ -7 % 3 }} {{ 2**10 }} {{ 1e16 }} {{ 0.1 + 0.2 }}", {}),
    ("{{ none }}|{{ missing }}|{{ true }}|{{ false }}", {}),
    ("{{ 'a\\x41\\u00e9\\t\\'' }}{{ \"q\\\"\" }}{{ 'a' 'b' }}", {}),
    ("{{ (1, 2) }} {{ (1,) }} {{ () }}", {}),
    ("{{ x }} {{ y }} {{ z }}", {"x": 1e22, "y": -0.0, "z": 123456789012345678}),
    # attribute and item access
    ("{{ x.y }}|{{ x['y'] }}|{{ x.get('y', 'd') }}|{{ x.get('k') }}", {"x": {"k": None}}),
    ("{{ x.y.z }}", {"x": {}}),
    ("{{ x.items is callable }} {{ x.items()|list }}", {"x": {"items": 3}}),
    ("{{ x['items'] }}", {"x": {"items": 3}}),
    ("{{ l[0] }} {{ l[-1] }} {{ l[5] }}|{{ l[1:] }} {{ l[::-1] }} {{ l[:-1] }} {{ 'héllo'[1:3] }} {{ 'abc'[-1] }}",
     {"l": [1, 2, 3]}),
    ("{{ none.attr }}|{{ n[0] }}", {"n": None}),
    # operators
    ("{{ 'ab' ~ none ~ 1 }} {{ 3 * 'ab' }} {{ [1] + [2] }} {{ 1 + 2.5 }} {{ 7 / 7 }} {{ 2 ** -1 }}", {}),
    ("{{ 1 if 2 > 1 else 3 }} {{ 'a' in 'abc' }} {{ 'a' not in ['a'] }} {{ 'k' in {'k': 1} }} {{ 1 < 2 < 3 }}", {}),
    ("{{ 'x' if false }}|{{ not 0 }}|{{ 0 or 'y' }}|{{ 1 and 2 }}|{{ [] or none }}", {}),
    ("{{ (1 == 1.0) }} {{ true == 1 }} {{ [1, 2] == [1, 2] }} {{ 'a' < 'b' }} {{ {'a': 1} == {'a': 1} }}", {}),
    ("{{ -x|abs }} {{ - 2 ** 2 }}", {"x": 3}),
    ("{{ 1 + 'a' }}", {}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ 'a' + missing }}", {}),
    ("{{ 1 / 0 }}", {}),
    # statements and scoping
    ("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }};{% endfor %}{{ x }}", {}),
    ("{% for i in [1, 2] %}{% if i == 2 %}{{ y }}{% endif %}{% set y = i %}{% endfor %}", {}),
    ("{% set ns = namespace(a=1, b=[]) %}{% for i in [1, 2] %}{% set ns.a = ns.a + i %}{% endfor %}{{ ns.a }}", {}),
    ("{% if true %}{% set z = 5 %}{% endif %}{{ z }}", {}),
    ("{% for a, b in x.items() %}{{ a }}={{ b }};{% endfor %}", {"x": {"q": 1, "p": 2}}),
    ("{% for x in [] %}a{% else %}empty{% endfor %}", {}),
    ("{% for x in [1, 2, 3] if x > 1 %}{{ loop.index }}/{{ loop.length }}{% endfor %}", {}),
    ("{% for x in 'abc' %}{{ loop.index0 }}{{ x }}{{ loop.first }}{{ loop.last }}{{ loop.revindex }}|{% endfor %}", {}),
    ("{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }}-{{ loop.cycle('a', 'b') }};{% endfor %}", {}),
    ("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}"
     "{{ x }}{% endfor %}", {}),
    ("{% for i in range(3) %}{{ i }}{% endfor %}{{ range(5, 0, -2)|list }}", {}),
    ("{% for k in d %}{{ k }}{% endfor %}", {"d": {"b": 1, "a": 2}}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}", {}),
    ("{% set t %}in {{ 'block' }}{% endset %}[{{ t }}]", {}),
    ("{% macro f(a, b='x') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(2, b='y') }}{{ f(a=3) }}", {}),
    ("{% if a %}1{% elif b %}2{% else %}3{% endif %}", {"a": 0, "b": ""}),
    ("{{ raise_exception('boom') }}", {}),
    ("{% for x in 5 %}{% endfor %}", {}),
    ("{% generation %}g{% endgeneration %}", {}),
    # filters
    ("{{ [1, 2]|first }} {{ [1, 2]|last }} {{ 'abc'|first }} {{ x|default('d') }} {{ ''|default('d') }} "
     "{{ ''|default('d', true) }} {{ none|default('d') }}", {}),
    ("{{ x|selectattr('r', 'equalto', 'u')|list }} {{ x|rejectattr('r', 'equalto', 'u')|map(attribute='r')|list }}",
     {"x": [{"r": "u"}, {"r": "a"}]}),
    ("{{ x|map(attribute='r')|join(',') }} {{ x|selectattr('r')|list|length }} {{ x|map('length')|list }}",
     {"x": [{"r": "u"}, {"r": ""}]}),
    ("{{ '  a  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 5|string + 'a' }}|{{ 'ab'|upper }}{{ 'AB'|lower }}", {}),
    ("{{ 2.5|int }} {{ '3'|int }} {{ 'x'|int }} {{ 3|float }} {{ -3|abs }} {{ [3, 1, 2]|sort }} {{ [1, 2]|reverse|list }}",
     {}),
    ("{{ x|tojson }} {{ x|tojson(indent=2) }} {{ 'é\"\\n\\u0001'|tojson }} {{ [1.5, none, true]|tojson }}",
     {"x": {"b": [1, 2], "a": {}}}),
    ("{{ x|tojson(sort_keys=true) }}", {"x": {"b": 1, "a": [], "c": "x"}}),
    ("{{ x|items|list }} {{ x|length }} {{ 'héllo'|length }} {{ x|count }} {{ missing|length }}", {"x": {"a": 1}}),
    ("{{ 'a-b-c'|replace('-', '+') }} {{ 'hello world'|title }} {{ 'hello'|capitalize }} {{ [1, 1, 2]|unique|list }}",
     {}),
    ("{{ [1, 2, 3]|sum }} {{ ['b', 'A', 'c']|sort|join }} {{ 'a\\nb'|indent(2) }} {{ 'x'|list }}", {}),
    ("{{ x|unknownfilter }}", {}),
    # tests
    ("{{ 3 is odd }} {{ none is none }} {{ 'a' is string }} {{ 1 is number }} {{ false is false }} {{ 0 is false }} "
     "{{ x is defined }} {{ y is not defined }} {{ x is mapping }} {{ 3 is divisibleby 3 }} {{ 'a' is in 'abc' }}",
     {"x": {}}),
    ("{{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ [] is iterable }} {{ 'A' is upper }} "
     "{{ 2 is even }} {{ x is sameas none }} {{ 1 is eq 1 }} {{ 2 is gt 1 }}", {"x": None}),
    ("{{ x is unknowntest }}", {}),
    # Python methods
    ("{{ 'a b  c'.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}", {}),
    ("{{ '  x \\n'.strip() }}|{{ '\\n\\nx\\n'.lstrip('\\n') }}|{{ 'x\\n\\n'.rstrip('\\n') }}|{{ 'abcba'.strip('ab') }}", {}),
    ("{{ 'Hello World'.title() }} {{ 'ab'.upper() }} {{ 'a-b'.replace('-', '+') }} {{ 'abc'.startswith('ab') }} "
     "{{ 'abc'.endswith(('c', 'd')) }} {{ 'héllo'.find('l') }} {{ 'abc'.find('z') }} {{ ', '.join(['a', 'b']) }}", {}),
    ("{{ x.keys()|list }} {{ x.values()|list }} {{ x.items()|list }} {{ [1, 2, 1].count(1) }} {{ 'aaa'.count('a') }}",
     {"x": {"b": 1, "a": 2}}),
    ("{{ 'x'.nosuchmethod() }}", {}),
    # syntax errors
    ("{% if true %}unclosed", {}),
    ("{% endif %}", {}),
    ("{% include 'x' %}", {}),
    ("{{ 1 + }}", {}),
    ("{% for x in [1] %}{% endif %}", {}),
]


# Whole templates of other families the interpreter should read too (tools, slicing, loops with filters, tojson).
QWEN25 = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

MISTRAL_V03 = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "abcdef123", "type": "function",
                                                          "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}]},
    {"role": "tool", "content": "4", "tool_call_id": "abcdef123"},
    {"role": "assistant", "content": "  It is 4.  "},
    {"role": "user", "content": "Thanks!"},
]
WHOLE_TEMPLATES = [
    (QWEN25, {"messages": TOOL_CONVERSATION, "tools": TOOLS, "add_generation_prompt": True}),
    (QWEN25, {"messages": [U1, A1, U2], "tools": None, "add_generation_prompt": True}),
    (MISTRAL_V03, {"messages": TOOL_CONVERSATION, "tools": TOOLS, "bos_token": "<s>", "eos_token": "</s>"}),
    (MISTRAL_V03, {"messages": [U1, A1, U2], "bos_token": "<s>", "eos_token": "</s>"}),
    (MISTRAL_V03, {"messages": [U1, U2], "bos_token": "<s>", "eos_token": "</s>"}),
]


def write_jinja_cases():
    cases = []
    for template, variables in JINJA_CASES + WHOLE_TEMPLATES:
        case = {"template": template, "variables": variables}
        try:
            case["output"] = _compile_jinja_template(template).render(**variables)
        except Exception as error:
            case["error"] = f"{type(error).__name__}: {error}"
        cases.append(case)
    with open(os.path.join(OUT, "jinja_cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"jinja_cases.json: {len(cases)} templates")


# --- special tokens --------------------------------------------------------------------------------------------------

# A template that writes every special-token variable (and a model-specific one): what Transformers hands it.
SPECIAL_TOKENS_TEMPLATE = (
    "{% for m in messages %}{{ m.content }}{% endfor %}|bos={{ bos_token }}|eos={{ eos_token }}|unk={{ unk_token }}"
    "|sep={{ sep_token }}|pad={{ pad_token }}|cls={{ cls_token }}|mask={{ mask_token }}|image={{ image_token }}"
)
LLAMA = {"tokenizer_class": "LlamaTokenizer"}
FAST = {"tokenizer_class": "PreTrainedTokenizerFast"}
MIXTRAL_CONFIG = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 1000}
PADDING = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None, "pad_id": 2,
           "pad_type_id": 0, "pad_token": "</s>"}


def added_token(content, **flags):
    return {"__type": "AddedToken", "content": content, "lstrip": False, "rstrip": False, "normalized": False,
            "single_word": False, **flags}


# (name, tokenizer fixture, tokenizer_config.json, config.json, special_tokens_map.json, tokenizer.json padding);
# None leaves a file (or the padding) out.
SPECIAL_TOKEN_VARIANTS = [
    # tokenizer.model: LlamaTokenizer's defaults, or the generic conversion's model pieces
    ("spm_llama_no_tokens", "spm_bpe", LLAMA, None, None, None),
    ("spm_llama_bos_null", "spm_bpe", {**LLAMA, "bos_token": None}, None, None, None),
    ("spm_generic_no_tokens", "spm_bpe", {}, None, None, None),
    ("spm_generic_no_config", "spm_bpe", None, None, None, None),
    ("spm_mixtral_model_type", "spm_bpe", LLAMA, MIXTRAL_CONFIG, None, None),
    ("spm_unigram_mixtral_no_bos_piece", "spm_unigram", LLAMA, MIXTRAL_CONFIG, None, None),
    ("spm_unigram_llama_default_bos", "spm_unigram", LLAMA, None, None, None),
    ("spm_unigram_generic_eos_null", "spm_unigram", {"eos_token": None, "pad_token": "<pad>"}, None, None, None),
    # special_tokens_map.json: replaces tokenizer_config.json's keys, only without added_tokens_decoder
    ("spm_map_overrides_config", "spm_bpe", {**LLAMA, "bos_token": "<s>", "eos_token": "</s>"}, None,
     {"bos_token": "</s>", "eos_token": {"content": "<unk>", "lstrip": True}, "pad_token": "<unk>"}, None),
    ("spm_map_fills_absent", "spm_bpe", LLAMA, None, {"eos_token": "<unk>"}, None),
    ("spm_map_null", "spm_bpe", LLAMA, None, {"bos_token": None}, None),
    ("spm_map_ignored_with_added_tokens_decoder", "spm_bpe",
     {**LLAMA, "added_tokens_decoder": {"1": {"content": "<s>", "special": True, "normalized": False}}}, None,
     {"bos_token": "</s>", "pad_token": "<unk>"}, None),
    ("spm_map_additional_special_tokens", "spm_bpe", LLAMA, None, {"additional_special_tokens": ["<0x41>"]}, None),
    # token values
    ("spm_added_token_objects", "spm_bpe",
     {**LLAMA, "bos_token": added_token("<s>"), "eos_token": added_token("</s>", rstrip=True)}, None, None, None),
    ("spm_model_specific_tokens", "spm_bpe", {**LLAMA, "sep_token": "</s>", "image_token": "<0x41>"}, None, None,
     None),
    ("spm_extra_special_tokens_dict", "spm_bpe", {**LLAMA, "extra_special_tokens": {"image_token": "<0x42>"}}, None,
     None, None),
    # tokenizer.json: the class's defaults (none for PreTrainedTokenizerFast / TokenizersBackend)
    ("json_fast_no_tokens", "mixtral_spm", FAST, None, None, None),
    ("json_no_class", "mixtral_spm", {}, None, None, None),
    ("json_llama_no_tokens", "mixtral_spm", LLAMA, None, None, None),
    ("json_llama_fast_no_tokens", "mixtral_spm", {"tokenizer_class": "LlamaTokenizerFast"}, None, None, None),
    ("json_llama_mixtral_model_type", "mixtral_spm", LLAMA, MIXTRAL_CONFIG, None, None),
    ("json_qwen2_no_tokens", "qwen2_bytelevel", {"tokenizer_class": "Qwen2Tokenizer"}, None, None, None),
    ("json_qwen2_nulls", "qwen2_bytelevel", {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None,
                                             "unk_token": None, "eos_token": "<|im_end|>"}, None, None, None),
    ("json_qwen3_moe_model_type", "qwen2_bytelevel", {}, {"model_type": "qwen3_moe"}, None, None),
    ("json_gpt_neox_no_tokens", "olmoe_bytelevel", {"tokenizer_class": "GPTNeoXTokenizerFast"}, None, None, None),
    ("json_olmoe_model_type", "olmoe_bytelevel", {}, {"model_type": "olmoe"}, None, None),
    ("json_olmoe_fast_class", "olmoe_bytelevel", FAST, {"model_type": "olmoe"}, None, None),
    ("json_gpt2_no_tokens", "gpt2_prefix", {"tokenizer_class": "GPT2Tokenizer"}, None, None, None),
    # tokenizer.json: special_tokens_map.json, padding, token values
    ("json_map_overrides_config", "mixtral_spm", {**FAST, "bos_token": "<s>"}, None,
     {"bos_token": "</s>", "eos_token": "</s>", "image_token": "<unk>"}, None),
    ("json_padding_fast", "mixtral_spm", FAST, None, None, PADDING),
    ("json_padding_llama", "mixtral_spm", LLAMA, None, None, PADDING),
    ("json_padding_pad_null", "mixtral_spm", {**FAST, "pad_token": None}, None, None, PADDING),
    ("json_padding_qwen2_default", "qwen2_bytelevel", {"tokenizer_class": "Qwen2Tokenizer"}, None, None,
     {**PADDING, "pad_token": "<|im_end|>"}),
    ("json_padding_gpt2_none", "gpt2_prefix", {"tokenizer_class": "GPT2Tokenizer"}, None, None,
     {**PADDING, "pad_token": "<|endoftext|>"}),
    ("json_untyped_object", "mixtral_spm", {**FAST, "bos_token": {"content": "<s>"}}, None, None, None),
]


def write_special_tokens():
    """special_tokens.json: per variant, Transformers' class, special_tokens_map and the probe template's output."""
    variants = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, base, config, model_config, token_map, padding in SPECIAL_TOKEN_VARIANTS:
            folder = os.path.join(scratch, name)
            os.makedirs(folder)
            source = os.path.join(TOKENIZERS, base)
            if os.path.exists(os.path.join(source, "tokenizer.model")):
                shutil.copyfile(os.path.join(source, "tokenizer.model"), os.path.join(folder, "tokenizer.model"))
            else:
                with open(os.path.join(source, "tokenizer.json"), encoding="utf-8") as f:
                    document = json.load(f)
                document["padding"] = padding
                write_json(os.path.join(folder, "tokenizer.json"), document)
            files = {"tokenizer_config.json": None if config is None else
                     {**config, "chat_template": SPECIAL_TOKENS_TEMPLATE},
                     "config.json": model_config, "special_tokens_map.json": token_map}
            for file_name, content in files.items():
                if content is not None:
                    write_json(os.path.join(folder, file_name), content)
            variant = {"name": name, "base": base, "tokenizer_config": config, "config": model_config,
                       "special_tokens_map": token_map, "padding": padding}
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder)
                variant["class"] = type(tokenizer).__name__
                variant["special_tokens"] = list(tokenizer.special_tokens_map.items())
                if config is not None:
                    variant["rendered"] = tokenizer.apply_chat_template([{"role": "user", "content": "x"}],
                                                                        tokenize=False)
            except Exception as error:
                variant["error"] = f"{type(error).__name__}: {error}"
            variants.append(variant)
    write_json(os.path.join(OUT, "special_tokens.json"), {"template": SPECIAL_TOKENS_TEMPLATE, "variants": variants})
    print(f"special_tokens.json: {len(variants)} folders")


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, family in {**FAMILIES, **SPM_FAMILIES}.items():
        write_family(name, family)
    write_jinja_cases()
    write_special_tokens()


if __name__ == "__main__":
    main()

"""Chat templates: pyinfer.chat must render exactly what HF transformers' apply_chat_template(tokenize=False) renders,
for SmolLM2's template (read from its GGUF) and for templates written here that lean on trim_blocks/lstrip_blocks,
tojson, namespace, loop controls, {% generation %} and raise_exception. Also message validation and template errors.
Needs transformers (tokenizers) and gguf; the SmolLM2 GGUF comes from tests/assets.py (cached).
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from pyinfer.chat import ChatTemplate, render_chat  # noqa: E402

BOS, EOS = "<s>", "</s>"

# ---------------------------------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------------------------------

# Llama-3 style: BOS, an optional system message, header tokens, {%- -%} whitespace control, namespace and
# raise_exception on an unknown role.
LLAMA3_STYLE = """{{- bos_token }}
{%- set ns = namespace(system='') %}
{%- if messages[0]['role'] == 'system' %}
    {%- set ns.system = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- endif %}
{%- if ns.system %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + ns.system + '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
    {%- if message['role'] not in ['user', 'assistant'] %}
        {{- raise_exception('Unknown role: ' + message['role']) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Plain blocks and newlines, so trim_blocks/lstrip_blocks decide the output; tojson on non-ASCII and HTML
# characters; loop.last, break/continue (loopcontrols), {% generation %}, eos_token, an extra variable.
BLOCKS_STYLE = """{% for message in messages %}
  {% if message.role == 'skip' %}
    {% continue %}
  {% endif %}
  {% if message.role == 'stop' %}
    {% break %}
  {% endif %}
<|{{ message.role }}|>
  {% if message.role == 'assistant' %}
{% generation %}{{ message.content }}{{ eos_token }}{% endgeneration %}
  {% else %}
{{ message.content | tojson }}
  {% endif %}
  {% if loop.last and not add_generation_prompt %}
[end of {{ messages | length }} messages]
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|assistant|>{% if persona is defined %} ({{ persona }}){% endif %}

{% endif %}"""

# Roles must alternate user/assistant after an optional system message (Mistral-style check).
ALTERNATING = """{% for message in messages %}
{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{% endif %}
{{ '[' + message['role'] + '] ' + message['content'] + '\\n' }}
{% endfor %}"""

SYSTEM = {"role": "system", "content": "You are terse. Answer in one word."}
CONVERSATIONS = {
    "one user turn": [{"role": "user", "content": "Hello!"}],
    "system + user": [SYSTEM, {"role": "user", "content": "What is 2+2?"}],
    "multi-turn": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                   {"role": "user", "content": "Tell me a joke."}],
    "system + multi-turn": [SYSTEM, {"role": "user", "content": "  padded  \n"},
                            {"role": "assistant", "content": "Four."}, {"role": "user", "content": "And 3+3?"}],
    "unicode and markup": [{"role": "user", "content": "héllo 😀 漢字 <b>&amp;</b> \"quotes\" 'single' \\ back"},
                           {"role": "assistant", "content": "{{ not_a_variable }} {% raw %} <|im_end|>"}],
    "empty content": [{"role": "user", "content": ""}],
}
USER = [{"role": "user", "content": "hi"}]
SKIPPING = [{"role": "user", "content": "a"}, {"role": "skip", "content": "hidden"},
            {"role": "assistant", "content": "b"}, {"role": "stop", "content": "x"}, {"role": "user", "content": "c"}]


@pytest.fixture(scope="module")
def smollm2_template():
    pytest.importorskip("gguf")
    from assets import gguf_metadata, smollm2_gguf_path
    return gguf_metadata(smollm2_gguf_path())["tokenizer.chat_template"][0]


@pytest.fixture(scope="module")
def hf_render():
    """(template, messages, add_generation_prompt, **kwargs) -> transformers' rendering, via a
    PreTrainedTokenizerFast over a 3-token word-level vocabulary with bos/eos tokens and the template set."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    word_level = tokenizers.models.WordLevel({"<unk>": 0, BOS: 1, EOS: 2}, unk_token="<unk>")
    cache = {}

    def render(template, messages, add_generation_prompt, **kwargs):
        if template not in cache:
            cache[template] = transformers.PreTrainedTokenizerFast(
                tokenizer_object=tokenizers.Tokenizer(word_level), bos_token=BOS, eos_token=EOS,
                chat_template=template)
        return cache[template].apply_chat_template(messages, tokenize=False,
                                                   add_generation_prompt=add_generation_prompt, **kwargs)
    return render


# ---------------------------------------------------------------------------------------------------------------
# Same text as transformers
# ---------------------------------------------------------------------------------------------------------------

def _check_all(template, hf_render, conversations, **kwargs):
    n = 0
    for name, messages in conversations.items():
        for agp in (True, False):
            want = hf_render(template, messages, agp, **kwargs)
            got = render_chat(template, messages, add_generation_prompt=agp, bos_token=BOS, eos_token=EOS, **kwargs)
            assert got == want, (name, agp)
            assert ChatTemplate(template, BOS, EOS).render(messages, add_generation_prompt=agp, **kwargs) == want
            n += 1
    return n


def test_smollm2_template_matches_transformers(smollm2_template, hf_render):
    assert "<|im_start|>" in smollm2_template
    assert _check_all(smollm2_template, hf_render, CONVERSATIONS) == 2 * len(CONVERSATIONS)
    # Without a system message SmolLM2's template supplies its own; with one it uses it.
    text = render_chat(smollm2_template, CONVERSATIONS["one user turn"])
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n")
    assert render_chat(smollm2_template, [SYSTEM]).startswith("<|im_start|>system\n" + SYSTEM["content"])


@pytest.mark.parametrize("template", [LLAMA3_STYLE, BLOCKS_STYLE], ids=["llama3-style", "blocks"])
def test_written_templates_match_transformers(template, hf_render):
    _check_all(template, hf_render, CONVERSATIONS)


def test_loop_controls_generation_and_extra_variables(hf_render):
    conv = {"skipping": SKIPPING}
    _check_all(BLOCKS_STYLE, hf_render, conv)
    _check_all(BLOCKS_STYLE, hf_render, conv, persona="pirate")
    text = render_chat(BLOCKS_STYLE, SKIPPING, persona="pirate", eos_token=EOS)
    assert "hidden" not in text and '"c"' not in text and "b" + EOS in text and "(pirate)" in text


def test_llama3_style_output():
    text = render_chat(LLAMA3_STYLE, CONVERSATIONS["system + user"], bos_token="<|begin_of_text|>")
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse. Answer in one "
                    "word.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_tojson_does_not_escape_html():
    assert render_chat("{{ messages[0].content | tojson }}", [{"role": "user", "content": "<a href='x'>é</a>"}]) \
        == "\"<a href='x'>é</a>\""
    assert render_chat("{{ {'b': 1, 'a': [1, 2]} | tojson(indent=2, sort_keys=True) }}", USER) == \
        '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("messages, match", [
    ("hello", "must be a list"),
    ([], "messages is empty"),
    ([{"role": "user", "content": "ok"}, "hello"], r"messages\[1\] must be a dict"),
    ([{"content": "no role"}], r"messages\[0\] has no 'role'"),
    ([{"role": "user"}], r"messages\[0\] has no 'content'"),
    ([{"role": "user", "content": ["a", "b"]}], r"messages\[0\]\['content'\] must be a str"),
    ([{"role": "user", "content": "a"}, {"role": None, "content": "b"}], r"messages\[1\]\['role'\] must be a str"),
])
def test_bad_messages_are_named(messages, match):
    with pytest.raises(ValueError, match=match):
        render_chat(LLAMA3_STYLE, messages)


def test_raise_exception_becomes_value_error(hf_render):
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ValueError, match="roles must alternate"):
        render_chat(ALTERNATING, bad)
    with pytest.raises(Exception, match="roles must alternate"):     # transformers raises jinja2's TemplateError
        hf_render(ALTERNATING, bad, False)
    good = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    # trim_blocks drops the newline after a block tag, not after {{ ... }}: each line ends in two.
    assert render_chat(ALTERNATING, good) == hf_render(ALTERNATING, good, True) == "[user] a\n\n[assistant] b\n\n"
    with pytest.raises(ValueError, match="Unknown role: tool"):
        render_chat(LLAMA3_STYLE, [{"role": "tool", "content": "x"}])


@pytest.mark.parametrize("template, match", [
    ("{% for m in messages %}{{ m.content }}", "line 1.*endfor"),
    ("ok\n{{ messages[0] }\n", "line 2"),
    ("{% if %}{% endif %}", "line 1"),
])
def test_template_syntax_errors_are_value_errors(template, match):
    with pytest.raises(ValueError, match="chat template syntax error at " + match):
        ChatTemplate(template)
    with pytest.raises(ValueError, match="chat template syntax error"):
        render_chat(template, USER)


@pytest.mark.parametrize("template", [
    "{{ ().__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ raise_exception.__globals__['__builtins__'] }}",
    "{{ namespace.__init__.__globals__ }}",
])
def test_sandbox_blocks_python_internals(template):
    with pytest.raises(ValueError, match="chat template failed.*(unsafe|access)"):
        render_chat(template, USER)


def test_sandbox_blocks_unsafe_access():
    with pytest.raises(ValueError, match="chat template failed"):
        render_chat("{{ messages.__class__.__mro__[1].__subclasses__() }}", USER)
    with pytest.raises(ValueError, match="chat template failed"):
        render_chat("{% set ns = namespace() %}{% set ns._x = 1 %}", USER)
    with pytest.raises(ValueError, match="chat template failed"):
        render_chat("{{ messages.append(1) }}", USER)                   # immutable sandbox: no list mutation


def test_caller_messages_untouched():
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(ValueError, match="chat template failed"):
        render_chat("{% set _ = messages[0].update({'content': 'changed'}) %}", messages)
    render_chat(LLAMA3_STYLE, messages)
    assert messages == [{"role": "user", "content": "x"}]

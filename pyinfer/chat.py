"""Chat templates: a model's Jinja template (GGUF `tokenizer.chat_template`, HF `chat_template`) rendered as HF
transformers' apply_chat_template(..., tokenize=False) renders it, in jinja2's sandbox. It produces the prompt text
only: tokenizing it (special=True, so <|im_start|> and the like become their ids) is the caller's step. Also the
official template of model families whose GGUF files often carry none (Gemma 3). No tool schemas from Python
functions, no assistant-token masks, no continue_final_message.
"""
import functools
import json
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ChatTemplate", "render_chat", "default_chat_template", "GEMMA3_CHAT_TEMPLATE"]


# ---------------------------------------------------------------------------------------------------------------
# The environment: what HF's template sees besides the messages
# ---------------------------------------------------------------------------------------------------------------

def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    """HF's tojson: plain json.dumps, no HTML escaping (jinja2's own filter escapes <, >, & and ')."""
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _Namespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore-prefixed attributes (no reaching CPython internals)."""

    def __init__(*args, **kwargs):  # noqa: N805  (jinja's Namespace takes self positionally the same way)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r}: underscore names are not allowed")


class _Dict:
    """dict() for templates without the type object itself (no dict.__subclasses__ and the like)."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %} (HF's marker of assistant text for training masks): renders its
    body unchanged, as apply_chat_template does when it is not asked for a mask."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def _compile(template: str) -> jinja2.Template:
    """The compiled template; ValueError naming the line and problem if it does not parse."""
    if not isinstance(template, str):
        raise TypeError(f"chat template must be a str, got {type(template).__name__}")
    return _compile_cached(template)


@functools.lru_cache(maxsize=32)
def _compile_cached(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    env.globals["dict"] = _Dict()
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ValueError(f"chat template syntax error at line {e.lineno}: {e.message}") from None


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------

def _check_messages(messages) -> list:
    """messages as fresh plain dicts, each with str 'role' and 'content'; ValueError naming the first bad one, or
    for no message at all (as transformers refuses an empty conversation)."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"messages must be a list of {{'role': str, 'content': str}} dicts, "
                         f"got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: a chat needs at least one message")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(m).__name__}: "
                             f"{m!r:.80}")
        for key in ("role", "content"):
            if key not in m:
                raise ValueError(f"messages[{i}] has no {key!r}: {m!r:.80}")
            if not isinstance(m[key], str):
                raise ValueError(f"messages[{i}][{key!r}] must be a str, got {type(m[key]).__name__}: "
                                 f"{m[key]!r:.80}")
        out.append(dict(m))
    return out


def render_chat(template: str, messages: list, add_generation_prompt: bool = True, bos_token: str = "",
                eos_token: str = "", **kwargs) -> str:
    """The prompt text of `messages` under `template`: variables messages, add_generation_prompt, bos_token,
    eos_token, tools=None, documents=None, plus kwargs (which may override tools/documents). A template that
    refuses the messages (raise_exception, e.g. "roles must alternate") or fails while rendering is a ValueError
    carrying its message."""
    compiled = _compile(template)
    variables = {"tools": None, "documents": None, **kwargs}
    variables.update(messages=_check_messages(messages), add_generation_prompt=bool(add_generation_prompt),
                     bos_token=bos_token, eos_token=eos_token)
    try:
        return compiled.render(**variables)
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat template failed: {e.message or type(e).__name__}") from None


class ChatTemplate:
    """A chat template with the BOS/EOS strings it may print; compiled (and checked) once at construction."""

    def __init__(self, template: str, bos_token: str = "", eos_token: str = ""):
        _compile(template)
        self.template = template
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: list, add_generation_prompt: bool = True, **kwargs) -> str:
        return render_chat(self.template, messages, add_generation_prompt, self.bos_token, self.eos_token, **kwargs)

    def __repr__(self):
        return f"ChatTemplate({len(self.template)} chars, bos_token={self.bos_token!r}, eos_token={self.eos_token!r})"


# ---------------------------------------------------------------------------------------------------------------
# Templates for files that carry none
# ---------------------------------------------------------------------------------------------------------------

# Gemma 3's chat template, verbatim from the tokenizer_config.json of google/gemma-3-*-it: turns are
# <start_of_turn>{user|model}\n{content, trimmed}<end_of_turn>\n, a system message is folded into the first user
# turn (followed by a blank line), and roles must alternate user/assistant. GGUFs converted from the base (-pt)
# checkpoints, like Gemma 3 270M's, have no tokenizer.chat_template.
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

_ARCH_CHAT_TEMPLATES = {"gemma3": GEMMA3_CHAT_TEMPLATE}


def default_chat_template(arch: str):
    """The chat template to use for a model of architecture `arch` whose file has none: Gemma 3's official one for
    "gemma3", else None (no template: chat() refuses, generate() still works)."""
    return _ARCH_CHAT_TEMPLATES.get(arch)

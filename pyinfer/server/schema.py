"""The OpenAI request bodies as pydantic models (unknown fields ignored, wrong types refused), llama.cpp's
/tokenize and /detokenize bodies, and the OpenAI-style error (`{"error": {"message", "type", "param", "code"}}`).
Defaults follow llama.cpp's server (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05), not OpenAI's cloud.
Validation only: nothing here runs a model.
"""
import re
from typing import Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator


class ApiError(Exception):
    """An error the server answers with `status` and the OpenAI error object."""

    def __init__(self, status, message, type="invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


_TYPE_TAG = re.compile(r"(str|int|float|bool|list|dict|function-after|function-before|json-or-python)(\[.*\])?")


def validation_error(exc):
    """An ApiError(400) naming the first bad field of a pydantic ValidationError."""
    errs = exc.errors()
    e = errs[0] if errs else {"loc": (), "msg": str(exc)}
    # drop the union-member tags pydantic puts in the path ("prompt.list[int]" -> "prompt")
    param = ".".join(str(x) for x in e.get("loc", ()) if not _TYPE_TAG.fullmatch(str(x)))
    more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
    return ApiError(400, f"invalid request: {param or 'body'}: {e.get('msg')}{more}", param=param or None,
                    code="invalid_value")


Number = Union[StrictInt, float]  # JSON numbers; a string or a bool is refused


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class StreamOptions(_Body):
    include_usage: StrictBool = False


class Sampling(_Body):
    """The sampling and stopping fields both endpoints share."""
    model: Optional[StrictStr] = None
    max_tokens: Optional[StrictInt] = Field(None, ge=0)  # None: until end of text or the context is full
    temperature: Number = Field(0.8, ge=0.0)  # 0: greedy
    top_p: Number = Field(0.95, ge=0.0, le=1.0)
    n: StrictInt = Field(1, ge=1, le=16)
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[StrictStr, List[StrictStr], None] = None
    seed: Optional[StrictInt] = Field(None, ge=0, lt=2 ** 64)
    presence_penalty: Number = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: Number = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: Optional[Dict[str, Number]] = None  # token id (as a string) -> bias in [-100, 100]
    # llama.cpp's extensions
    top_k: StrictInt = Field(40, ge=0)
    min_p: Number = Field(0.05, ge=0.0, le=1.0)
    typical_p: Number = Field(1.0, ge=0.0, le=1.0)
    repeat_penalty: Number = Field(1.0, gt=0.0)
    repeat_last_n: StrictInt = Field(64, ge=0)
    ignore_eos: StrictBool = False
    cache_prompt: StrictBool = True

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if v is None:
            return None
        v = [v] if isinstance(v, str) else v
        if any(not s for s in v):
            raise ValueError("stop strings must be non-empty")
        return v or None

    @field_validator("logit_bias")
    @classmethod
    def _bias(cls, v):
        if v is None:
            return None
        out = {}
        for k, b in v.items():
            if not k.strip().lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys are token ids, got {k!r}")
            if not -100.0 <= b <= 100.0:
                raise ValueError(f"logit_bias values must be in [-100, 100], got {b} for token {k}")
            out[int(k)] = float(b)
        return out


class ContentPart(_Body):
    type: StrictStr
    text: Optional[StrictStr] = None


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[StrictStr, List[ContentPart], None] = None
    name: Optional[StrictStr] = None

    def text(self):
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        bad = [p.type for p in self.content if p.type != "text"]
        if bad:
            raise ApiError(400, f"message content of type {bad[0]!r} is not supported; send text parts only",
                           param="messages", code="unsupported_content")
        return "".join(p.text or "" for p in self.content)


class ChatRequest(Sampling):
    messages: List[Message] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=0)  # the newer name of max_tokens
    logprobs: StrictBool = False
    top_logprobs: Optional[StrictInt] = Field(None, ge=0, le=20)


class CompletionRequest(Sampling):
    prompt: Union[StrictStr, List[StrictStr], List[StrictInt], List[List[StrictInt]]]
    max_tokens: Optional[StrictInt] = Field(16, ge=0)  # OpenAI's default for /v1/completions
    echo: StrictBool = False
    logprobs: Optional[StrictInt] = Field(None, ge=0, le=20)
    suffix: Optional[StrictStr] = None

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v):
        if v:
            raise ValueError("suffix (insertion) is not supported")
        return v


class TokenizeRequest(_Body):
    content: StrictStr
    add_special: StrictBool = False  # BOS where the model adds one
    parse_special: StrictBool = True  # "<|im_start|>" becomes its special token
    with_pieces: StrictBool = False


class DetokenizeRequest(_Body):
    tokens: List[StrictInt]

#!/usr/bin/env python3
"""An independent SentencePiece BPE encoder, in plain Python (no sentencepiece module), for
tests/tokenizer_test.cpp to check moge::tokenizer::Tokenizer::encode against.

It reads tokenizer.model with its own protobuf reader and implements, from the SentencePiece
sources' description, what the C++ side must do:
  * split the text on special pieces (CONTROL and USER_DEFINED, longest match first);
  * identity normalization: spaces become U+2581; the dummy prefix U+2581 only for a stretch of
    text that starts the input;
  * BPE: start from characters (a USER_DEFINED piece inside a stretch stays one symbol), merge
    the adjacent pair whose concatenation is a piece with the highest score, leftmost on ties;
  * a symbol that is no piece becomes its UTF-8 bytes as <0xNN> pieces (byte fallback).

Usage: spm_bpe_reference.py MODEL INPUT_JSON OUTPUT_JSON
INPUT_JSON is a list of strings, OUTPUT_JSON receives a list of id lists.
Only what the test model uses is supported (identity normalizer, no extra-whitespace removal).
"""
import json
import struct
import sys

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def fields(b):
    i = 0
    while i < len(b):
        tag, i = varint(b, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = varint(b, i)
        elif wire == 1:
            v, i = b[i:i + 8], i + 8
        elif wire == 5:
            v, i = b[i:i + 4], i + 4
        elif wire == 2:
            n, i = varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("unsupported wire type %d" % wire)
        yield num, wire, v


def load(path):
    data = open(path, "rb").read()
    pieces = []  # (piece, score, type)
    spec = {"name": "nmt_nfkc", "add_dummy_prefix": True, "remove_extra_whitespaces": True}
    byte_fallback = False
    for num, wire, v in fields(data):
        if num == 1:
            piece, score, typ = "", 0.0, NORMAL
            for n2, w2, v2 in fields(v):
                if n2 == 1:
                    piece = v2.decode("utf-8")
                elif n2 == 2:
                    score = struct.unpack("<f", v2)[0]
                elif n2 == 3:
                    typ = v2
            pieces.append((piece, score, typ))
        elif num == 2:  # TrainerSpec
            for n2, w2, v2 in fields(v):
                if n2 == 35:
                    byte_fallback = bool(v2)
        elif num == 3:  # NormalizerSpec
            for n2, w2, v2 in fields(v):
                if n2 == 1:
                    spec["name"] = v2.decode()
                elif n2 == 3:
                    spec["add_dummy_prefix"] = bool(v2)
                elif n2 == 4:
                    spec["remove_extra_whitespaces"] = bool(v2)
    assert spec["name"] == "identity" and not spec["remove_extra_whitespaces"], spec
    return pieces, spec, byte_fallback


class Encoder:
    def __init__(self, path):
        pieces, self.spec, self.byte_fallback = load(path)
        # Pieces BPE may produce (NORMAL, USER_DEFINED, UNUSED) and the others (CONTROL, ...).
        self.vocab = {p: (i, s) for i, (p, s, t) in enumerate(pieces) if t in (NORMAL, USER_DEFINED, UNUSED)}
        self.reserved = {p: i for i, (p, s, t) in enumerate(pieces) if t not in (NORMAL, USER_DEFINED, UNUSED)}
        self.unk = next(i for i, (p, s, t) in enumerate(pieces) if t == UNKNOWN)
        self.user_defined = sorted({p for p, s, t in pieces if t == USER_DEFINED}, key=len, reverse=True)
        self.specials = {p: i for i, (p, s, t) in enumerate(pieces) if t in (CONTROL, USER_DEFINED) and p}
        self.special_strings = sorted(self.specials, key=len, reverse=True)

    def bpe(self, text, at_start):
        if not text:
            return []
        norm = text.replace(" ", "\u2581")
        if at_start and self.spec["add_dummy_prefix"]:
            norm = "\u2581" + norm
        symbols, i = [], 0
        while i < len(norm):
            ud = next((u for u in self.user_defined if norm.startswith(u, i)), None)
            step = len(ud) if ud else 1
            symbols.append(norm[i:i + step])
            i += step
        while True:
            best = None
            for k in range(len(symbols) - 1):
                merged = symbols[k] + symbols[k + 1]
                if merged in self.vocab:
                    score = self.vocab[merged][1]
                    if best is None or score > best[0]:
                        best = (score, k)
            if best is None:
                break
            k = best[1]
            symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
        ids = []
        for s in symbols:
            if s in self.vocab:
                ids.append(self.vocab[s][0])
            elif s in self.reserved:
                ids.append(self.reserved[s])
            elif self.byte_fallback:
                ids.extend(self.reserved["<0x%02X>" % b] for b in s.encode("utf-8"))
            else:
                ids.append(self.unk)
        return ids

    def encode(self, text):
        ids, seg, pos = [], 0, 0
        while pos < len(text):
            sp = next((s for s in self.special_strings if text.startswith(s, pos)), None)
            if sp is None:
                pos += 1
                continue
            ids += self.bpe(text[seg:pos], seg == 0)
            ids.append(self.specials[sp])
            pos += len(sp)
            seg = pos
        ids += self.bpe(text[seg:], seg == 0)
        return ids


def main():
    model, inp, out = sys.argv[1:4]
    enc = Encoder(model)
    texts = json.load(open(inp, encoding="utf-8"))
    json.dump([enc.encode(t) for t in texts], open(out, "w"))


if __name__ == "__main__":
    main()

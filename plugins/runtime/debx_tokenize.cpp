/*
 * debx_tokenize: the runtime's tokenizer as a tool (no TensorRT, no CUDA).
 *
 *   debx_tokenize --spm spm.model|CHECKPOINT_DIR [--max-length 512] [--batch-size 1]
 *                 [--normalization auto|transformers5|transformers4|sentencepiece] [--explain]
 *
 * --normalization auto (the default) reads from the checkpoint folder (the one given, or the one holding spm.model)
 * whether transformers 4's or 5's normalization applies (tokenizer.h); --explain prints the choice and its reason
 * on stderr.
 *
 * stdin: {"text": ..., "text_pair": ...} per line.
 * stdout: {"input_ids": [...], "token_type_ids": [...], "attention_mask": [...]} per line; rows of a batch are
 * right-padded to the batch's longest row, exactly as debx_serve feeds the engine.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "requests.h"
#include "tokenizer.h"

namespace
{

struct Options
{
    std::string spm;
    int32_t maxLength = 512;
    size_t batchSize = 1;
    debx::runtime::Normalization normalization = debx::runtime::Normalization::kAuto;
    bool explain = false;
};

[[noreturn]] void usage(char const* error)
{
    if (error != nullptr)
    {
        std::fprintf(stderr, "debx_tokenize: error: %s\n", error);
    }
    std::fprintf(stderr,
        "usage: debx_tokenize --spm spm.model|CHECKPOINT_DIR [--max-length N] [--batch-size N] "
        "[--normalization auto|transformers5|transformers4|sentencepiece] [--explain] < requests.jsonl\n");
    std::exit(error != nullptr ? 2 : 0);
}

Options parseArgs(int argc, char** argv)
{
    Options o;
    debx::runtime::ArgReader a(argc, argv, usage);
    while (a.next())
    {
        if (a.common(o.maxLength, o.batchSize))
        {
            continue;
        }
        if (a.arg() == "--spm")
        {
            o.spm = a.value();
        }
        else if (a.arg() == "--normalization")
        {
            using debx::runtime::Normalization;
            std::string const v = a.value();
            if (v == "auto")
                o.normalization = Normalization::kAuto;
            else if (v == "transformers5" || v == "transformers")
                o.normalization = Normalization::kTransformers;
            else if (v == "transformers4")
                o.normalization = Normalization::kTransformers4;
            else if (v == "sentencepiece")
                o.normalization = Normalization::kSentencePiece;
            else
                usage("--normalization must be auto, transformers5, transformers4 or sentencepiece");
        }
        else if (a.arg() == "--explain")
        {
            o.explain = true;
        }
        else
        {
            usage(("unknown argument " + a.arg()).c_str());
        }
    }
    if (o.spm.empty())
    {
        usage("--spm is required");
    }
    return o;
}

//! Encode and print one batch; lines that failed keep their place as {"error": ...}.
void flush(debx::runtime::DebertaTokenizer const& tok, std::vector<std::string> const& lines, Options const& o)
{
    debx::runtime::EncodedBatch const b = debx::runtime::encodeLines(tok, lines, o.maxLength);
    for (size_t n = 0; n < lines.size(); ++n)
    {
        if (b.rowOf[n] == SIZE_MAX)
        {
            std::cout << b.replies[n] << '\n';
            continue;
        }
        auto const& e = b.rows[b.rowOf[n]];
        nlohmann::json j{{"input_ids", e.inputIds}, {"token_type_ids", e.tokenTypeIds},
            {"attention_mask", e.attentionMask}};
        std::cout << j.dump() << '\n';
    }
    std::cout.flush();
}

} // namespace

int main(int argc, char** argv)
{
    Options const o = parseArgs(argc, argv);
    std::unique_ptr<debx::runtime::DebertaTokenizer> tok;
    try
    {
        tok = std::make_unique<debx::runtime::DebertaTokenizer>(o.spm, o.normalization);
        if (o.explain)
        {
            std::fprintf(stderr, "debx_tokenize: normalization %s: %s\n",
                debx::runtime::normalizationName(tok->normalization()), tok->normalizationReason().c_str());
        }
    }
    catch (std::exception const& e)
    {
        std::fprintf(stderr, "debx_tokenize: error: %s\n", e.what());
        return 2;
    }
    debx::runtime::forEachBatch(std::cin, o.batchSize, [&](std::vector<std::string> const& lines) { flush(*tok, lines, o); });
    return 0;
}

/*
 * debx_tokenize: the runtime's tokenizer as a tool (no TensorRT, no CUDA).
 *
 *   debx_tokenize --spm spm.model [--max-length 512] [--batch-size 1] [--normalization transformers|sentencepiece]
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
    debx::runtime::Normalization normalization = debx::runtime::Normalization::kTransformers;
};

[[noreturn]] void usage(char const* error)
{
    if (error != nullptr)
    {
        std::fprintf(stderr, "debx_tokenize: error: %s\n", error);
    }
    std::fprintf(stderr,
        "usage: debx_tokenize --spm spm.model [--max-length N] [--batch-size N] "
        "[--normalization transformers|sentencepiece] < requests.jsonl\n");
    std::exit(error != nullptr ? 2 : 0);
}

Options parseArgs(int argc, char** argv)
{
    Options o;
    for (int i = 1; i < argc; ++i)
    {
        std::string const arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc)
            {
                usage(("missing value for " + arg).c_str());
            }
            return argv[++i];
        };
        if (arg == "--spm")
        {
            o.spm = value();
        }
        else if (arg == "--max-length")
        {
            o.maxLength = std::atoi(value().c_str());
        }
        else if (arg == "--batch-size")
        {
            int const n = std::atoi(value().c_str());
            if (n < 1)
            {
                usage("--batch-size must be >= 1");
            }
            o.batchSize = static_cast<size_t>(n);
        }
        else if (arg == "--normalization")
        {
            std::string const v = value();
            if (v == "transformers")
            {
                o.normalization = debx::runtime::Normalization::kTransformers;
            }
            else if (v == "sentencepiece")
            {
                o.normalization = debx::runtime::Normalization::kSentencePiece;
            }
            else
            {
                usage("--normalization must be transformers or sentencepiece");
            }
        }
        else if (arg == "-h" || arg == "--help")
        {
            usage(nullptr);
        }
        else
        {
            usage(("unknown argument " + arg).c_str());
        }
    }
    if (o.spm.empty())
    {
        usage("--spm is required");
    }
    if (o.maxLength < 3)
    {
        usage("--max-length must be >= 3");
    }
    return o;
}

//! Encode and print one batch; lines that failed keep their place as {"error": ...}.
void flush(debx::runtime::DebertaTokenizer const& tok, std::vector<std::string> const& lines, Options const& o)
{
    std::vector<debx::runtime::Encoding> rows;
    std::vector<std::string> errors(lines.size());
    std::vector<size_t> rowOf(lines.size(), SIZE_MAX);
    for (size_t n = 0; n < lines.size(); ++n)
    {
        try
        {
            debx::runtime::Request const r = debx::runtime::parseRequest(lines[n]);
            rows.push_back(tok.encode(r.text, r.textPair ? &*r.textPair : nullptr, o.maxLength));
            rowOf[n] = rows.size() - 1;
        }
        catch (std::exception const& e)
        {
            errors[n] = e.what();
        }
    }
    tok.padBatch(rows);
    for (size_t n = 0; n < lines.size(); ++n)
    {
        if (rowOf[n] == SIZE_MAX)
        {
            std::cout << debx::runtime::errorLine(errors[n]) << '\n';
            continue;
        }
        auto const& e = rows[rowOf[n]];
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
    }
    catch (std::exception const& e)
    {
        std::fprintf(stderr, "debx_tokenize: error: %s\n", e.what());
        return 2;
    }
    std::vector<std::string> pending;
    std::string line;
    while (std::getline(std::cin, line))
    {
        pending.push_back(line);
        if (pending.size() == o.batchSize)
        {
            flush(*tok, pending, o);
            pending.clear();
        }
    }
    if (!pending.empty())
    {
        flush(*tok, pending, o);
    }
    return 0;
}

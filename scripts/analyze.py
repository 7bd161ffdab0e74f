"""Rule analyze: segment a reconstruction into particles and measure every shell."""

from edxtomo.analyze import analyze_specimen, write_analysis
from edxtomo.options import AnalyzeOptions
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    options = AnalyzeOptions.model_validate(snakemake.params.options)
    analysis = analyze_specimen(snakemake.input.recon, options,
                                replicate_dir=snakemake.input.get("replicates"))
    write_analysis(analysis, snakemake.output[0])

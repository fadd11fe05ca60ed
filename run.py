"""Search QM9 chemical space for the molecule of minimal atomization energy (the command line).

    python run.py                         # small campaign on this machine (config/local.py, GFN2-xTB)
    python run.py --qc pyscf/hf/sto-3g    # another QC method
    python run.py --restart runs/<name>   # continue an interrupted run
    python run.py --help                  # every option

The campaign itself is assembled, run and recorded by moldesign.steer.campaign.Campaign.
"""
import signal
import sys

if __name__ == '__main__':
    try:
        from moldesign.cli import main
    except KeyboardInterrupt:  # Ctrl-C while the libraries load
        sys.exit(128 + signal.SIGINT)
    sys.exit(main())

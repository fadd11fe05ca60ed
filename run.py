"""Search QM9 chemical space for the molecule of minimal atomization energy (the command line).

    python run.py                         # small campaign on this machine (config/local.py, GFN2-xTB)
    python run.py --qc pyscf/hf/sto-3g    # another QC method
    python run.py --restart runs/<name>   # continue an interrupted run
    python run.py --help                  # every option

The campaign itself is assembled, run and recorded by moldesign.steer.campaign.Campaign.
"""
import signal
import sys


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == '__main__':
    from moldesign.steer.signals import relay_sigint  # Standard library only: no thread exists yet
    relay_sigint()  # Ctrl-C reaches Python even while RDKit holds the SIGINT handler
    signal.signal(signal.SIGTERM, _interrupt)  # Like Ctrl-C until the campaign takes the signals over
    signal.signal(signal.SIGHUP, _interrupt)
    try:
        from moldesign.cli import main
        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the libraries load
        print('run.py: interrupted before the run started; nothing was computed', file=sys.stderr)
        code = 128 + signal.SIGINT
    sys.exit(code)

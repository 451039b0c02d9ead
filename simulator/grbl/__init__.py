"""A GRBL-family laser engraver a driver cannot tell from firmware: Grbl 1.1h, grblHAL, FluidNC.

One model object per machine, configured by the same firmware profile as the driver
(``profile.protocol`` is a :class:`~markctl.profiles.GrblProtocol`), reachable in-process
(:class:`~markctl.simulator.base.ByteDevice`), on a pseudo-terminal and on TCP
(:mod:`markctl.simulator.serve`). Behaviour follows PROTOCOLS.md §1 (Grbl 1.1 interface), §2
(grblHAL / FluidNC differences) and the fidelity list of §9.4:

* **Serial line**: every byte takes ``10 / baud`` s on the wire each way, plus ``host_latency_s``
  (USB-serial latency) each way; both on the simulation clock.
* **RX buffer** of ``rx_buffer_bytes``: realtime bytes are picked out at "interrupt" time wherever
  they appear (never stored); other bytes go into the ring, and when the ring is full they are
  **dropped** as on real firmware (``serial.c``), so a host that sends too much gets merged or
  mangled lines. :attr:`GrblSimulator.rx_overflow_bytes` counts them and
  :attr:`GrblSimulator.corrupted_lines` names the lines that lost bytes. On the ``grbl`` dialect a
  ``$x=`` / ``G10 L2`` / ``G28.1`` EEPROM write blocks reception for a few ms, and bytes streamed
  behind it are lost too (§1.2: why settings must be sent send-response).
* **Line buffer** of ``line_buffer_chars``: longer lines are answered ``error:11``.
* **Planner** of ``planner_blocks`` blocks; a motion line's ``ok`` is sent only when its block
  fits (so ``ok`` lags execution, "acked != executed"). Motion uses a trapezoidal profile per
  block with Grbl-style look-ahead: junction speeds from junction deviation ($11, 0.01 mm) and
  exit speeds that can always stop by the end of what is queued, so a starved planner slows the
  head down, as on a real machine. :attr:`GrblSimulator.planner_underruns` counts the times the
  head had to stop for lack of blocks and then started again,
  :attr:`GrblSimulator.lookahead_starved_blocks` the blocks run slower than the path allows
  because too few blocks were queued behind them (neither counts a planned stop: M3/M4/M5
  changes, dwells, program end).
* **States** Idle, Run, Hold:0/1, Jog, Alarm, Door:0-2, Check, Home, Sleep with Grbl's rules:
  G-code in Alarm/Jog gives ``error:9``; ``$X`` unlocks; ^X while moving gives ``ALARM:3`` (or
  ``ALARM:6`` homing) and the machine stays in Alarm; ``$C`` check mode with the automatic reset
  on exit; ``$H`` (``error:5`` unless $22=1); ``$J=`` jogs cancelled by 0x85; ``$SLP``; overrides
  10-200 %.
* **Laser** (§1.7, gcode.c/spindle_control.c/stepper.c of 1.1h): with ``$32=1`` the beam fires
  only in G1/G2/G3 blocks (and in jogs, which inherit the laser state); ``M4`` power is S x actual
  speed / programmed F (a feed override changes it) and off standing still; ``M3`` is constant;
  an M3/S change synced while the motion mode is not G1-G3 sets the output *off*, so ``M3 S500`` in
  G0 leaves it off at idle while ``G1 M3 S500`` fires during a dwell; a spindle override at idle
  re-applies S regardless; ``S0``/``M5`` off; laser off during hold and door (a spindle-stop
  override, undone on resume or 0x9E with ``[MSG:Restoring spindle]``). With ``$32=0`` the
  "spindle" output fires whenever on, G0 included - which is why drivers verify ``$32=1``.
* **Suspension**: during a hold or a door, lines wait in the RX buffer unanswered until the resume;
  a soft reset answers the line being executed (waiting for planner space, dwelling, held at a soft
  limit) with ``ok`` before the banner; soft limits bound machine space to ``[-$13x, 0]``.
* **Status reports** (§1.4): ``MPos`` or ``WPos`` per ``$10`` bit 0, ``Bf`` per bit 1, ``FS`` with
  the actual laser S (M4 scaling and override included), ``Pn`` (door), ``WCO`` every 10 idle /
  30 busy reports and on change, ``Ov`` every 10/20 reports and on change (one report later if
  ``WCO`` is printed; at once after an override, spindle or coolant change), ``A:`` with ``Ov``
  from the output actually on. Duplicate ``?`` before a report goes out are coalesced;
  ``?`` is ignored while homing and after a hard/soft-limit alarm until reset.
* **The burn**: every marked piece of motion is burned into :attr:`workpiece` with the profile's
  ``laser.spot_mm`` as width. Model (documented, deliberately simple): the line energy
  ``E/L`` in J/mm is ``power_w * S/$30 * override`` integrated over the piece (M3: over time; M4:
  over distance / programmed speed) divided by its length; depth = ``DEPTH_MM_PER_J_PER_MM * E/L``
  and shade = ``min(1, E/L / SHADE_FULL_J_PER_MM)``. :attr:`burn_log` keeps every burned piece with
  its simulated start and end time and the program line it came from.
* **Faults** (``faults="..."``, grammar in :mod:`markctl.simulator.faults`):
  ``disconnect@line:N`` (the link drops when host line N arrives, counting every line since
  power-on, handshake commands included; the machine keeps executing what it already queued, as
  real Grbl does), ``silence@line:N`` (the response to line N is lost),
  ``garble@byte:N[=mask]`` (the N-th byte sent is XORed with ``mask``, default 0x80),
  ``alarm@t:T=N`` (``ALARM:N``; 1 and 2 are critical: ``[MSG:Reset to continue]`` and only ^X is
  served), ``door@t:T[=seconds open]``, ``slow@t:T=S`` (S more seconds before the host reads each
  reply), ``stall@t:T`` (motion freezes where it is, ``Run`` is still reported and no more lines
  are taken, so no ``ok`` comes; realtime commands still work; a reset clears it). ``t`` counts simulated seconds from the first planned motion (job start), so one spec
  means the same under every clock; ``t:0`` means from power-on.

* **Power cycles**: attaching a host to a running simulator pulses "DTR" (``reset_on_attach``): the
  board resets and forgets its position, so :attr:`GrblSimulator.position` (what Grbl reports)
  and :attr:`GrblSimulator.physical_position` (where the head is, where burns land) differ until
  ``$H`` homes to the switches: machine 0 at the far corner, physical = machine + travel.

Not modelled: probing, tool changes, arcs outside the XY plane, spindle ramp-up, $N startup-line
execution errors beyond ``>line:ok``, flash-string timing, limit switches other than by the alarm
fault; homing moves straight to the switch corner (no search/locate/pull-off); a feed hold
decelerates within the current block; a stationary M3 beam burns only during G4 dwells.

Byte-for-byte reference: ``tests/fixtures/grbl/`` holds transcripts of gnea/grbl 1.1h on grbl-sim
that ``tests/simulator/grbl/test_transcripts.py`` replays against this simulator.
"""

from markctl.simulator.grbl.blocks import BurnRecord
from markctl.simulator.grbl.simulator import GrblSimulator

__all__ = ["BurnRecord", "GrblSimulator"]

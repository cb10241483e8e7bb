"""Running a trained checkpoint on people's own footage: ``raymotion predict`` (run.py) on an image, a folder of
images, a video or an imported clip, with boxes from a boxes file (raymotion.data.boxes) or the whole frame;
the exported parameters and their conventions (outputs.py); mesh overlays (overlay.py); batch inference over
many videos on Ray Data (pipeline.py, jobs/predict.py)."""

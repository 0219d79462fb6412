# Exploration script as run for the README figures (paths under /tmp are its feature caches).
import sys, hashlib, time, types, torch, numpy as np
torch.set_num_threads(1)
from pathlib import Path
from affectline.settings import get_settings
from pipeline.eval_expressions import *
from pipeline.analyse import _load_landmarker
from recognition.face.expression import ExpressionModel, grey_crops, margin_crops, to_input
from recognition.face.tfjs import read_graph_model, TFJSGraph
from pipeline.faces import sharpness
import cv2
cachef=Path(sys.argv[1]); size=None if sys.argv[2]=='native' else int(sys.argv[2]); n=int(sys.argv[3]) if len(sys.argv)>3 else None
s=get_settings()
lm=_load_landmarker(s,'cpu')
torch.set_num_threads(1); mx=ExpressionModel.load(s)
nodes,w,_=read_graph_model(Path('/tmp/expr_npm/package/models/emotion.json'))
hu=TFJSGraph(nodes,w); hu=TFJSGraph(nodes,w,output=hu.logits_node()).eval()
folder=Path('/work/shared/fixtures/expressions')
items=subsample(read_labels(folder),n)
cache=DetectionCache(cachef,detector_key(s))
M=(0.0,0.1,0.2,0.3)
rows=dict(file=[],label=[],found=[],blend=[],pose=[],sharp=[],iod=[],box=[],mx_fer=[],mx=[],hu=[],hu_fer=[],det=[])
from recognition.face.readability import iod_from_landmarks
t0=time.time()
for i,it in enumerate(items):
  p=image_path(folder,it); raw=p.read_bytes(); img=load_image(p); dg=hashlib.sha1(raw).hexdigest()
  hit,nat=cache.get(dg,None)
  if not hit: raise SystemExit('native missing '+it.file)
  det=None
  if nat is not None:
    if size is None: fr=img; det=nat
    else:
      fr,rect=place(img,float(nat.boxes[0,2]-nat.boxes[0,0]),size); hit,det=cache.get(dg,size)
      if not hit: continue
  rows['file'].append(it.file); rows['label'].append(it.label); rows['det'].append(det is not None)
  if det is None:
    for k,v in (('found',False),('blend',np.full(52,np.nan)),('pose',np.full(3,np.nan)),('sharp',np.nan),('iod',np.nan),('box',np.full(4,np.nan)),('mx_fer',np.full(7,np.nan)),('mx',np.full((4,7),np.nan)),('hu',np.full((4,7),np.nan)),('hu_fer',np.full(7,np.nan))): rows[k].append(v)
    continue
  r=lm.analyze(fr,det)
  rows['found'].append(bool(r.found[0])); rows['blend'].append(r.blendshapes[0]); rows['pose'].append(r.pose[0])
  rows['iod'].append(iod_from_landmarks(r.landmarks)[0])
  g=cv2.cvtColor(fr,cv2.COLOR_RGB2GRAY); rows['sharp'].append(sharpness(g,det.boxes[0])); rows['box'].append(det.boxes[0])
  c,_=grey_crops(fr,det)
  cs=np.concatenate([c]+[margin_crops(fr,det.boxes,m)[0] for m in M])
  x=to_input(cs)
  with torch.inference_mode():
    a=mx.net(x.contiguous(memory_format=torch.channels_last)).numpy(); b=hu(x.permute(0,2,3,1)).numpy()
  rows['mx_fer'].append(a[0]); rows['mx'].append(a[1:]); rows['hu_fer'].append(b[0]); rows['hu'].append(b[1:])
  if i%200==0: print(i,time.time()-t0,flush=True)
np.savez(f'/tmp/expr_cache/feats_{sys.argv[2]}.npz',**{('fname' if k=='file' else k):np.array(v) for k,v in rows.items()})
print('done',len(rows['file']),time.time()-t0)
